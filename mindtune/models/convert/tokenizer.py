"""Tokenizer pieces of conversion: a `tokenizers` tokenizer.json rebuilt from GGUF metadata, and the choice of
a safe pad token.
"""
from typing import Iterable, Optional

from mindtune.errors import CheckpointError

# llama.cpp's `tokenizer.ggml.pre` names a pre-tokenizer. Those with a Hugging Face equivalent we can rebuild:
# "gpt2": the GPT-2 regex inside ByteLevel. "digits": every digit its own piece first, then the GPT-2 regex
# (SmolLM/StarCoder tokenizer.json files use Digits(individual_digits) + ByteLevel). "regex": a Split on the
# pattern below, then ByteLevel without its own regex.
_LLAMA3_REGEX = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
                 r"|\s*[\r\n]+|\s+(?!\S)|\s+")
_QWEN2_REGEX = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
                r"|\s*[\r\n]+|\s+(?!\S)|\s+")
GGUF_PRE_TOKENIZERS = {
    "default": ("gpt2", None), "gpt2": ("gpt2", None), "gpt-2": ("gpt2", None), "mpt": ("gpt2", None),
    "olmo": ("gpt2", None),
    "smollm": ("digits", None), "starcoder": ("digits", None), "refact": ("digits", None),
    "codeshell": ("digits", None),
    "llama-bpe": ("regex", _LLAMA3_REGEX), "llama3": ("regex", _LLAMA3_REGEX), "qwen2": ("regex", _QWEN2_REGEX),
}
CONTROL, USER_DEFINED = 3, 4  # llama.cpp token types


def gguf_bpe_tokenizer(tokens, merges, token_types, pre: str, add_prefix_space: bool, where: str):
    """A `tokenizers.Tokenizer` equal to a GGUF "gpt2" (byte-level BPE) vocabulary."""
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, pre_tokenizers

    kind, pattern = GGUF_PRE_TOKENIZERS.get(pre or "default", (None, None))
    if kind is None:
        raise CheckpointError(f"{where}: GGUF pre-tokenizer {pre!r} is not supported "
                              f"(known: {', '.join(sorted(GGUF_PRE_TOKENIZERS))})")
    vocab = {tok: i for i, tok in enumerate(tokens)}
    pairs = [tuple(m.split(" ", 1)) for m in merges]
    tok = Tokenizer(models.BPE(vocab=vocab, merges=pairs, fuse_unk=False, byte_fallback=False))
    byte_level = pre_tokenizers.ByteLevel(add_prefix_space=add_prefix_space, use_regex=kind != "regex")
    if kind == "gpt2":
        tok.pre_tokenizer = byte_level
    elif kind == "digits":
        tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True), byte_level])
    else:
        split = pre_tokenizers.Split(Regex(pattern), behavior="isolated", invert=False)
        tok.pre_tokenizer = pre_tokenizers.Sequence([split, byte_level])
    tok.decoder = decoders.ByteLevel()
    # control tokens (<|im_start|> ...) are special: matched whole in text, dropped by skip_special_tokens
    added = [AddedToken(tokens[i], special=t == CONTROL, normalized=False)
             for i, t in enumerate(token_types) if t in (CONTROL, USER_DEFINED)]
    tok.add_tokens(added)
    return tok


def choose_pad_token(declared: Optional[str], candidates: Iterable[str], bos: Optional[str], eos: Optional[str],
                     chat_template: Optional[str]) -> Optional[str]:
    """A pad token that never occurs in real text: MindFormers masks attention to every key equal to the pad id.

    Takes the declared pad, else the first candidate (unknown token, then other special tokens), skipping the
    BOS/EOS tokens and any token the chat template writes. SmolLM2 declares <|im_end|> (its EOS, in every chat
    turn); this picks <|endoftext|> instead.
    """
    def safe(token):
        return token and token not in (bos, eos) and not (chat_template and token in chat_template)

    for token in [declared, *candidates]:
        if safe(token):
            return token
    return declared or eos

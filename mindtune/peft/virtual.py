"""The two ways a method adds virtual tokens, shared by four methods.

SoftPromptLM (prompt tuning, P-tuning v1): P embeddings placed before the input embeddings. The backbone is
built for P extra positions; virtual tokens take positions 0..P-1, the real tokens follow (the generator places
soft prompts the same way), and logits/hidden states come back for the real positions only.

PrefixLM (prefix tuning, P-tuning v2): per-layer key/value prefixes that every query attends to. MindFormers'
LlamaModel concatenates them in front of each layer's keys and values (after the rotary embedding, so prefixes
carry no position) and widens the additive attention mask by P zero (= visible) columns; the sequence keeps
its length and positions.

Both save their prompt in a fixed, folded form that generation uses directly:
    peft.prompt_embeddings  [P, hidden]
    peft.prefix_kv          [layers, 2 (key, value), kv_heads, P, head_dim]
"""
import numpy as np
from mindspore import nn, ops

PROMPT_EMBEDDINGS = "peft.prompt_embeddings"
PREFIX_KV = "peft.prefix_kv"


class SoftPromptLM(nn.Cell):
    """logits, hidden = SoftPromptLM(lm, encoder, P, fill_id)(input_ids); `encoder()` returns [P, hidden]."""

    def __init__(self, lm, encoder, num_virtual: int, fill_id: int):
        super().__init__(auto_prefix=False)  # keep the base model's and the encoder's parameter names
        self.lm = lm
        self.encoder = encoder
        self.num_virtual = num_virtual
        self.fill_id = fill_id

    def construct(self, input_ids, input_embeds=None, prefix_keys_values=None):
        batch = input_ids.shape[0]
        if input_embeds is None:
            input_embeds = self.lm.embed(input_ids)
        prompt = self.encoder().astype(input_embeds.dtype)
        prompt = ops.broadcast_to(prompt.expand_dims(0), (batch,) + prompt.shape)
        embeds = ops.concat((prompt, input_embeds), 1)
        # MindFormers builds the attention mask from the token ids (keys equal to the pad id are hidden): give the
        # virtual positions a non-pad id so that every real token sees them.
        virtual_ids = ops.full((batch, self.num_virtual), self.fill_id, dtype=input_ids.dtype)
        logits, hidden = self.lm(ops.concat((virtual_ids, input_ids), 1), embeds, prefix_keys_values)
        return logits[:, self.num_virtual:], hidden[:, self.num_virtual:]


class PrefixLM(nn.Cell):
    """logits, hidden = PrefixLM(lm, source)(input_ids); `source(batch)` returns one tensor per layer,
    [2 (key, value), batch, P, kv_heads, head_dim] — the layout MindFormers' `_cat_prefix` reshapes."""

    def __init__(self, lm, source):
        super().__init__(auto_prefix=False)
        self.lm = lm
        self.source = source

    def construct(self, input_ids, input_embeds=None, prefix_keys_values=None, positions=None, segments=None):
        return self.lm(input_ids, input_embeds, self.source(input_ids.shape[0]), positions, segments)


def fill_id(spec) -> int:
    """A token id other than the pad id, for the virtual positions of the mask."""
    return (spec.pad_token_id + 1) % spec.vocab_size


def evaluate_cell(cell, *args):
    """Run `cell` once in inference mode (dropout off) and return numpy outputs."""
    was_training = cell.training
    cell.set_train(False)
    try:
        out = cell(*args)
    finally:
        cell.set_train(was_training)
    if isinstance(out, (tuple, list)):
        return [o.asnumpy() for o in out]
    return out.asnumpy()


def fold_prefix(source) -> np.ndarray:
    """The prefixes `source` produces, as saved: [layers, 2, kv_heads, P, head_dim] float32."""
    layers = np.stack(evaluate_cell(source, 1))             # [L, 2, 1, P, kv_heads, head_dim]
    return np.ascontiguousarray(layers[:, :, 0].transpose(0, 1, 3, 2, 4).astype(np.float32))


def fold_prompt(encoder) -> np.ndarray:
    """The soft prompt `encoder` produces, as saved: [P, hidden] float32."""
    return np.ascontiguousarray(evaluate_cell(encoder).astype(np.float32))


def check_virtual(saved_shape_p: int, cfg, where: str):
    from mindtune.errors import ConfigError

    if saved_shape_p != cfg.num_virtual_tokens:
        raise ConfigError(f"peft.num_virtual_tokens: {cfg.num_virtual_tokens}, but the adapter {where} has "
                          f"{saved_shape_p} virtual tokens; set peft.num_virtual_tokens={saved_shape_p}")

"""peft.method: prompt — prompt tuning (Lester et al. 2021): `num_virtual_tokens` trainable embeddings placed
before every input; the whole model stays frozen.

Initialisation (`peft.prompt_init`): `vocab` copies the embeddings of random vocabulary tokens (special tokens
excluded), `text` the embeddings of `peft.prompt_init_text` tokenized with the model tokenizer (repeated or cut to
the prompt length, as in the paper's class-label init), `random` draws from a normal distribution with the
embedding table's standard deviation. The adapter directory holds `peft.prompt_embeddings` [P, hidden].
"""
import numpy as np
from mindspore import Parameter, Tensor, nn

from mindtune.errors import CheckpointError, ConfigError
from mindtune.peft import Adapted
from mindtune.peft.virtual import PROMPT_EMBEDDINGS, SoftPromptLM, check_virtual, fill_id


class PromptEmbedding(nn.Cell):
    """() -> the soft prompt [P, hidden], a parameter named `peft.prompt_embeddings`."""

    def __init__(self, init: np.ndarray):
        super().__init__(auto_prefix=False)
        self.embeddings = Parameter(Tensor(np.asarray(init, np.float32)), name=PROMPT_EMBEDDINGS)

    def construct(self):
        return self.embeddings


def extra_positions(cfg) -> int:
    return cfg.num_virtual_tokens


def initial_prompt(cfg, table: np.ndarray, spec, tokenizer=None, seed: int = 0) -> np.ndarray:
    """The starting soft prompt [P, hidden] from the embedding table, per `peft.prompt_init`."""
    n = cfg.num_virtual_tokens
    rng = np.random.default_rng([seed, 7])
    if cfg.prompt_init == "random":
        return (rng.standard_normal((n, table.shape[1])) * table.std()).astype(np.float32)
    if cfg.prompt_init == "text":
        if not cfg.prompt_init_text:
            raise ConfigError("peft.prompt_init_text: required when peft.prompt_init is text")
        if tokenizer is None:
            raise ConfigError("peft.prompt_init: text needs the model tokenizer (set model.tokenizer)")
        ids = [i for i in tokenizer.encode(cfg.prompt_init_text) if i != tokenizer.bos_id]
        if not ids:
            raise ConfigError(f"peft.prompt_init_text: {cfg.prompt_init_text!r} tokenizes to nothing")
        ids = np.resize(np.asarray(ids), n)          # repeat a short text, cut a long one
    else:  # vocab
        vocab = min(table.shape[0], tokenizer.vocab_size if tokenizer is not None else table.shape[0])
        special = {spec.bos_token_id, spec.eos_token_id, spec.pad_token_id}
        pool = np.array([i for i in range(vocab) if i not in special])
        ids = rng.choice(pool, size=n, replace=len(pool) < n)
    return table[ids].astype(np.float32)


def saved_prompt(saved: dict, cfg, where: str) -> np.ndarray:
    if PROMPT_EMBEDDINGS not in saved:
        raise CheckpointError(f"{where}: adapter lacks tensor {PROMPT_EMBEDDINGS!r}")
    check_virtual(saved[PROMPT_EMBEDDINGS].shape[0], cfg, where)
    return saved[PROMPT_EMBEDDINGS]


def apply(lm, cfg, spec, *, tokenizer=None, seed=0, saved=None, where="adapter", **_) -> Adapted:
    if saved is not None:
        init = saved_prompt(saved, cfg, where)
        if init.shape[1] != spec.hidden_size:
            raise CheckpointError(f"{where}: {PROMPT_EMBEDDINGS} has width {init.shape[1]}, the model "
                                  f"{spec.hidden_size}")
    else:
        table = lm.backbone.tok_embeddings.embedding_weight.asnumpy().astype(np.float32)
        init = initial_prompt(cfg, table, spec, tokenizer, seed)
    encoder = PromptEmbedding(init)
    network = SoftPromptLM(lm, encoder, cfg.num_virtual_tokens, fill_id(spec))
    return Adapted(network=network, trainable=[encoder.embeddings], adapter_names=[PROMPT_EMBEDDINGS],
                   extra_positions=cfg.num_virtual_tokens, info={"prompt_init": cfg.prompt_init})

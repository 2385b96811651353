"""peft.method: ptuning_v2 — P-tuning v2 (Liu et al. 2022): trainable deep prompts, a key/value prefix of
`num_virtual_tokens` positions on every layer, trained directly (no reparameterisation unless
`peft.prefix_projection: true`, which puts MindPet's embedding -> dense -> tanh -> dense in between).

Built on MindPet's `PrefixEncoder` (works in graph and PyNative mode, unlike MindPet's `PrefixLayer`); its
output is permuted to the per-layer [2, batch, P, kv_heads, head_dim] tensors MindFormers' Llama takes as
`prefix_keys_values`, with one prefix per key/value head (grouped-query attention). `peft.dropout` is the
dropout on the prefixes. The adapter directory holds the prefixes themselves (`peft.prefix_kv`).
"""
import numpy as np
from mindspore import Tensor, nn

from mindtune.errors import CheckpointError
from mindtune.peft import Adapted
from mindtune.peft.virtual import PREFIX_KV, PrefixLM, check_virtual, fold_prefix

NAME = "peft.prefix_encoder."
TABLE = NAME + "mindpet_delta_ptuning2_embedding.embedding_table"


class MindPetPrefix(nn.Cell):
    """batch -> per-layer prefixes [2, batch, P, kv_heads, head_dim] from MindPet's PrefixEncoder."""

    def __init__(self, spec, num_virtual: int, dtype, projection: bool = False, projection_dim: int = 0,
                 dropout: float = 0.0):
        super().__init__(auto_prefix=False)
        from mindpet.delta.ptuning2 import PrefixEncoder

        # out_perm (2, 0, 1, 3, 4): [batch, P, 2 * layers, heads, dim] -> [2 * layers, batch, P, heads, dim],
        # split into layers of [2, batch, P, heads, dim] (MindPet's default order puts heads before P).
        self.encoder = PrefixEncoder(num_virtual, spec.num_layers, spec.num_kv_heads, spec.head_dim,
                                     projection, projection_dim or spec.hidden_size, dropout,
                                     out_perm=(2, 0, 1, 3, 4))
        self.encoder.update_parameters_name(NAME)
        self.dtype = dtype

    def construct(self, batch):
        return self.encoder(batch, self.dtype)

    def set_prefixes(self, kv: np.ndarray):
        """Load folded prefixes [layers, 2, kv_heads, P, head_dim] into the (projection-free) table, whose row p
        is [layers, 2, kv_heads, head_dim] flattened."""
        table = self.encoder.mindpet_delta_ptuning2_embedding.embedding_table
        value = np.asarray(kv, np.float32).transpose(3, 0, 1, 2, 4).reshape(kv.shape[3], -1)
        if tuple(value.shape) != tuple(table.shape):
            raise CheckpointError(f"{PREFIX_KV}: shape {tuple(kv.shape)} does not fit this model's prefix table "
                                  f"{tuple(table.shape)}")
        table.set_data(Tensor(value, dtype=table.dtype))


def saved_prefixes(saved: dict, cfg, spec, where: str) -> np.ndarray:
    if PREFIX_KV not in saved:
        raise CheckpointError(f"{where}: adapter lacks tensor {PREFIX_KV!r}")
    kv = saved[PREFIX_KV]
    expected = (spec.num_layers, 2, spec.num_kv_heads, kv.shape[3] if kv.ndim == 5 else -1, spec.head_dim)
    if kv.ndim != 5 or tuple(kv.shape) != expected:
        raise CheckpointError(f"{where}: {PREFIX_KV} has shape {tuple(kv.shape)}, this model needs "
                              f"(layers, 2, kv_heads, P, head_dim) = {expected}")
    check_virtual(kv.shape[3], cfg, where)
    return kv


def plain_prefix(lm, cfg, spec, saved, where) -> Adapted:
    """Prefixes trained directly, started from a saved adapter when one is given (both methods use this)."""
    source = MindPetPrefix(spec, cfg.num_virtual_tokens, lm.backbone.dtype, dropout=cfg.dropout)
    if saved is not None:
        source.set_prefixes(saved_prefixes(saved, cfg, spec, where))
    return _adapted(lm, source)


def _adapted(lm, source) -> Adapted:
    trainable = [p for p in source.get_parameters() if p.name != NAME + "mindpet_delta_ptuning2_prefix"]
    return Adapted(network=PrefixLM(lm, source), trainable=trainable, adapter_names=[p.name for p in trainable],
                   export=lambda: {PREFIX_KV: fold_prefix(source)})


def apply(lm, cfg, spec, *, saved=None, where="adapter", **_) -> Adapted:
    if saved is not None or not cfg.prefix_projection:
        return plain_prefix(lm, cfg, spec, saved, where)
    source = MindPetPrefix(spec, cfg.num_virtual_tokens, lm.backbone.dtype, projection=True,
                           projection_dim=cfg.encoder_hidden_size, dropout=cfg.dropout)
    return _adapted(lm, source)

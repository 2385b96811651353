"""peft.method: prefix — prefix tuning (Li & Liang 2021): a trainable key/value prefix of `num_virtual_tokens`
positions on every layer, produced during training by the reparameterisation MLP
embedding [P, hidden] -> linear(hidden, encoder_hidden_size) -> tanh -> linear(-> layers * 2 * kv_dim),
which the paper found to stabilise optimisation. After training the MLP is folded away: the adapter directory
holds only the prefixes it computes (`peft.prefix_kv`), which is what inference uses. Training from a saved
prefix adapter (`model.path` = the adapter) continues on those plain prefixes.

MindPet's PrefixLayer fails in PyNative mode and MindFormers' PrefixTuningAdapter wraps a whole
LlamaForCausalLM with its own loss; this module writes the small MLP itself and hands the per-layer prefixes to
MindFormers' Llama through `prefix_keys_values`, like P-tuning v2 (see mindtune.peft.virtual).
"""
import numpy as np
from mindspore import Parameter, Tensor, nn, ops

from mindtune.peft import Adapted
from mindtune.peft.ptuning_v2 import plain_prefix
from mindtune.peft.virtual import PREFIX_KV, PrefixLM, fold_prefix

NAME = "peft.prefix_mlp."


class PrefixMLP(nn.Cell):
    """batch -> per-layer prefixes [2, batch, P, kv_heads, head_dim] computed by the reparameterisation MLP."""

    def __init__(self, spec, num_virtual: int, hidden: int, seed: int):
        super().__init__()
        self.shape = (num_virtual, 2 * spec.num_layers, spec.num_kv_heads, spec.head_dim)
        rng = np.random.default_rng([seed, 11])
        self.embedding = Parameter(Tensor(rng.standard_normal((num_virtual, spec.hidden_size)).astype(np.float32)),
                                   name="embedding")
        self.dense_in = nn.Dense(spec.hidden_size, hidden)
        self.dense_out = nn.Dense(hidden, 2 * spec.num_layers * spec.num_kv_heads * spec.head_dim)
        self.update_parameters_name(NAME)

    def construct(self, batch):
        kv = self.dense_out(ops.tanh(self.dense_in(self.embedding)))          # [P, 2L * kv_heads * head_dim]
        kv = kv.reshape(self.shape).transpose(1, 0, 2, 3)                      # [2L, P, kv_heads, head_dim]
        kv = ops.broadcast_to(kv.expand_dims(1), (kv.shape[0], batch) + kv.shape[1:])
        return ops.split(kv, 2, axis=0)                                        # L x [2, batch, P, kvh, hd]


def apply(lm, cfg, spec, *, seed=0, saved=None, where="adapter", **_) -> Adapted:
    if saved is not None:  # a folded adapter: continue on its plain prefixes
        adapted = plain_prefix(lm, cfg, spec, saved, where)
        adapted.info["folded"] = True
        return adapted
    source = PrefixMLP(spec, cfg.num_virtual_tokens, cfg.encoder_hidden_size or spec.hidden_size, seed)
    trainable = list(source.get_parameters())
    return Adapted(network=PrefixLM(lm, source), trainable=trainable, adapter_names=[p.name for p in trainable],
                   export=lambda: {PREFIX_KV: fold_prefix(source)}, info={"folded": False})

"""Batched generation with a KV cache: `Generator(spec, weights).generate(prompt_ids, ...)`.

This is what `mindtune generate` and PPO rollouts call. The device runs two compiled graphs of
`CachedDecoder` (a prompt-block prefill and a one-token step); the host keeps per-row state (left padding,
rotary positions, which cache slots are filled, finished rows) and samples the next token with numpy.
`update_weights` swaps in new weights (e.g. after a PPO update, or LoRA merged into the base) without
recompiling.
"""
from dataclasses import dataclass
from typing import List, Optional, Sequence

import numpy as np

from mindtune.errors import CheckpointError, ConfigError
from mindtune.generation.sampling import SamplingConfig, next_tokens

MASKED = -1e9


@dataclass
class GenerationOutput:
    """tokens: int64 [batch, max_new_tokens], each row's new tokens (its EOS included) then pad ids.
    lengths: int64 [batch], how many of each row's tokens are real.
    logprobs: float32 [batch, max_new_tokens], log-probability of each chosen token under the model's
    distribution at the sampling temperature (log_softmax(logits / T); T = 1 for greedy), never the top-k/top-p
    truncated one (the policy RL stages train), 0 after a row's end."""
    tokens: np.ndarray
    lengths: np.ndarray
    logprobs: np.ndarray = None

    def rows(self) -> List[List[int]]:
        return [self.tokens[i, :n].tolist() for i, n in enumerate(self.lengths)]


def _round_up(n: int, multiple: int) -> int:
    return max(multiple, -(-n // multiple) * multiple)


def rotary_tables(positions: np.ndarray, head_dim: int, theta: float):
    """cos, sin [..., head_dim] at integer `positions`, computed in float32 as MindFormers' FreqsMgr does, so the
    cached decoder and the training network see identical positions."""
    inv_freq = 1.0 / (theta ** (np.arange(0, head_dim, 2, dtype=np.float32) / head_dim))
    angles = positions.astype(np.float32)[..., None] * inv_freq.astype(np.float32)
    angles = np.concatenate([angles, angles], axis=-1)
    return np.cos(angles), np.sin(angles)


def log_softmax_at(logits: np.ndarray, ids: np.ndarray) -> np.ndarray:
    top = logits.max(-1)
    norm = top + np.log(np.exp(logits - top[:, None]).sum(-1))
    return np.take_along_axis(logits, ids[:, None], -1)[:, 0] - norm


def _embedding(weights: dict) -> np.ndarray:
    name = "model.tok_embeddings.embedding_weight"
    if name not in weights:
        raise CheckpointError(f"generation weights: missing tensor {name!r} (the token embedding)")
    return np.asarray(weights[name], np.float32)


class Generator:
    """Generation for one model. Graphs are compiled lazily and kept while batch and length fit.

    spec: the ModelSpec; weights: full weights by MindFormers name (merged adapters included);
    profile: a DeviceProfile (its compute dtype: float16 on Ascend 910A, bfloat16 on 910B, float32 on CPU;
    logits always come back in float32); batch_size: rows per device call (smaller requests
    are padded, larger are split); len_multiple: prompt blocks and cache lengths are rounded up to it, so
    few distinct shapes get compiled.
    """

    def __init__(self, spec, weights: dict, profile=None, batch_size: int = 8, len_multiple: int = 32):
        self.spec = spec
        self.weights = weights
        self.profile = profile
        self.batch_size = batch_size
        self.len_multiple = len_multiple
        self.embedding = _embedding(weights)
        self._decoder = None
        self._capacity = 0
        self._prefix_cached = False

    # ---- weights -------------------------------------------------------------------------------------------
    def update_weights(self, weights: dict):
        """Use new weights (same architecture) for the next calls; compiled graphs are kept."""
        self.weights = weights
        self.embedding = _embedding(weights)
        if self._decoder is not None:
            self._decoder.set_weights(self.spec, weights)

    def _decoder_for(self, length: int):
        if self._decoder is None or length > self._capacity:
            import mindspore as ms

            from mindtune.generation.decoder import CachedDecoder

            # the training profile's compute dtype: bf16-trained models decode in bf16, never squeezed into fp16
            dtype = {"float16": ms.float16, "bfloat16": ms.bfloat16}.get(
                getattr(self.profile, "compute_dtype", "float32"), ms.float32)
            self._capacity = _round_up(length, 128)
            fused_norm = self.profile is not None and self.profile.fused_rms_norm
            self._decoder = CachedDecoder(self.spec, self.weights, self.batch_size, self._capacity, dtype,
                                          fused_norm)
            self._decoder.set_train(False)
            self._prefix_cached = False
        return self._decoder

    # ---- generation ----------------------------------------------------------------------------------------
    def generate(self, prompts: Sequence[Sequence[int]], max_new_tokens: int,
                 sampling: SamplingConfig = SamplingConfig(), seed: int = 0,
                 eos_ids: Optional[Sequence[int]] = None, soft_prompt: Optional[np.ndarray] = None,
                 prefix_kv=None, min_new_tokens: int = 0, banned_ids: Sequence[int] = ()) -> GenerationOutput:
        """Continue each prompt (a list of token ids) by up to `max_new_tokens` tokens, stopping a row at EOS.

        eos_ids: the tokens that end a row (default: the spec's EOS); min_new_tokens: EOS cannot be chosen
            before this many tokens (as in transformers' generate). banned_ids: tokens never chosen (RL rollouts
            ban the pad id, which the training network's attention would mask).
        soft_prompt: optional [n_virtual, hidden] embeddings placed before every prompt (prompt tuning).
        prefix_kv: optional per-layer (key, value) arrays [kv_heads, n_prefix, head_dim] every token attends
            to (prefix tuning / P-tuning v2).
        """
        sampling.check()
        if max_new_tokens < 1:
            raise ConfigError(f"max_new_tokens must be >= 1 (got {max_new_tokens})")
        eos = {self.spec.eos_token_id} if eos_ids is None else {int(i) for i in eos_ids}
        rng = np.random.default_rng(seed)
        parts = [self._generate_batch(list(prompts[start:start + self.batch_size]), max_new_tokens, sampling,
                                      rng, eos, soft_prompt, prefix_kv, min_new_tokens, list(banned_ids))
                 for start in range(0, len(prompts), self.batch_size)]
        if not parts:
            return GenerationOutput(np.zeros((0, max_new_tokens), np.int64), np.zeros(0, np.int64),
                                    np.zeros((0, max_new_tokens), np.float32))
        return GenerationOutput(*(np.concatenate([getattr(p, f) for p in parts])
                                  for f in ("tokens", "lengths", "logprobs")))

    def _generate_batch(self, prompts, max_new_tokens, sampling, rng, eos, soft_prompt, prefix_kv, min_new,
                        banned):
        import mindspore as ms

        spec, rows, cap_rows = self.spec, len(prompts), self.batch_size
        for i, p in enumerate(prompts):
            if len(p) == 0 and soft_prompt is None:
                raise ConfigError(f"prompt {i} is empty")
            if len(p) and (min(p) < 0 or max(p) >= spec.vocab_size):
                raise ConfigError(f"prompt {i} has a token id outside the vocabulary (size {spec.vocab_size})")
        n_virtual = 0 if soft_prompt is None else len(soft_prompt)
        n_prefix = 0 if prefix_kv is None else int(np.asarray(prefix_kv[0][0]).shape[1])
        row_len = np.array([len(p) + n_virtual for p in prompts] + [1] * (cap_rows - rows))
        block = _round_up(int(row_len.max()), self.len_multiple)
        needed = n_prefix + block + max_new_tokens
        if needed > spec.max_position + n_prefix:
            raise ConfigError(f"prompt block {block} + {max_new_tokens} new tokens exceed the model's "
                              f"{spec.max_position} positions")
        decoder = self._decoder_for(needed)
        length = self._capacity
        if prefix_kv is not None or self._prefix_cached:
            # stale slots from earlier calls are masked and need no clearing; prefix slots are (re)written
            decoder.reset_cache(prefix_kv)
            self._prefix_cached = prefix_kv is not None

        # host state: prompt block left-padded at slots [n_prefix, n_prefix + block)
        pad = block - row_len
        hidden = spec.hidden_size
        x = np.zeros((cap_rows, block, hidden), np.float32)
        for b, p in enumerate(prompts):
            row = self.embedding[np.asarray(p, np.int64)]
            if n_virtual:
                row = np.concatenate([np.asarray(soft_prompt, np.float32), row])
            x[b, pad[b]:] = row
        valid = np.zeros((cap_rows, length), bool)
        valid[:, :n_prefix] = True
        for b in range(cap_rows):
            valid[b, n_prefix + pad[b]:n_prefix + block] = True
        slots = np.arange(length)
        positions = np.maximum(np.arange(block)[None, :] - pad[:, None], 0)     # [rows, block]

        def step(inputs, first_slot, pos):
            s = inputs.shape[1]
            new_slots = first_slot + np.arange(s)
            cos, sin = rotary_tables(pos, spec.head_dim, spec.rope_theta)        # [rows, s, hd]
            allowed = valid[:, None, :] & (slots[None, None, :] <= new_slots[None, :, None])
            mask = np.where(allowed, 0.0, MASKED).astype(np.float32)[:, None, None, :, :]
            idx = np.zeros((cap_rows, spec.num_kv_heads, s, 3), np.int32)
            idx[..., 0] = np.arange(cap_rows)[:, None, None]
            idx[..., 1] = np.arange(spec.num_kv_heads)[None, :, None]
            idx[..., 2] = new_slots[None, None, :]
            logits = decoder(ms.Tensor(inputs), ms.Tensor(cos[:, :, None]), ms.Tensor(sin[:, :, None]),
                             ms.Tensor(mask), ms.Tensor(idx))
            return logits.asnumpy()[:rows]

        out = np.full((rows, max_new_tokens), spec.pad_token_id, np.int64)
        lengths = np.zeros(rows, np.int64)
        logprobs = np.zeros((rows, max_new_tokens), np.float32)
        done = np.zeros(rows, bool)
        logits = step(x, n_prefix, positions)
        cur_pos = row_len.copy()                       # next position of each row
        slot = n_prefix + block
        eos_list = sorted(eos)
        temperature = 1.0 if sampling.greedy else sampling.temperature
        for t in range(max_new_tokens):
            allowed = logits
            blocked = banned + (eos_list if t < min_new else [])
            if blocked:
                allowed = logits.copy()
                allowed[:, blocked] = -np.inf
            new = next_tokens(allowed, sampling, rng)
            chosen = log_softmax_at(logits / np.float32(temperature), new)
            for b in np.nonzero(~done)[0]:
                out[b, t] = new[b]
                logprobs[b, t] = chosen[b]
                lengths[b] += 1
                done[b] = int(new[b]) in eos
            if done.all() or t == max_new_tokens - 1:
                break
            ids = np.zeros(cap_rows, np.int64)
            ids[:rows] = new
            valid[:, slot] = True
            logits = step(self.embedding[ids][:, None, :], slot, cur_pos[:, None])
            cur_pos += 1
            slot += 1
        return GenerationOutput(out, lengths, logprobs)

"""Rollouts for the online stages (ppo, grpo): prompts in, sampled responses laid out for the training network.

    prompts = encode_prompts(read_rows(path), tokenizer, max_length, key="data.train")
    rollout = sample(generator, prompts, sampling, max_new_tokens, seed=[seed, iteration], eos_ids=...,
                     pad_id=..., seq_length=max_length + max_new_tokens + len(suffix))
    reward_ids, reward_last = reward_inputs(rollout, suffix)     # what a reward model scores

Each row of a Rollout is [prompt][response][pad ...] (right padded to `seq_length`), the layout of SFT rows: the
training network reads it with the pad mask MindFormers builds from `ids != pad_id`. `labels` carries each
response token at the position that predicts it (the SFT convention), so `token_log_probs(logits, labels)` gives
the policy's log-probabilities of exactly the sampled actions. The pad id is banned in sampling: MindFormers
masks every key equal to it, so a sampled pad token (SmolLM2's pad is the real token <|endoftext|>) would be
invisible to the training network. A row ends at its EOS (kept as its last action) or at max_new_tokens.
"""
from dataclasses import dataclass
from typing import List, Sequence

import numpy as np

from mindtune.engine.losses import IGNORE
from mindtune.errors import ConfigError


@dataclass
class Rollout:
    input_ids: np.ndarray        # int32 [N, S] prompt, response, pad ids
    labels: np.ndarray           # int32 [N, S] response tokens at the positions that predict them, IGNORE elsewhere
    last_index: np.ndarray       # int32 [N] position of each row's last real token (where a reward model reads)
    ended: np.ndarray            # bool [N] the response ended with EOS
    gen_logprobs: np.ndarray     # float32 [N, S] the generator's log-probabilities, aligned with labels
    responses: List[List[int]]   # the sampled token ids of each row (its EOS included)
    prompt_index: np.ndarray     # int64 [N] which prompt each row answers

    @property
    def mask(self) -> np.ndarray:
        """float32 [N, S]: 1 on response actions."""
        return (self.labels != IGNORE).astype(np.float32)

    @property
    def response_lengths(self) -> np.ndarray:
        return np.array([len(r) for r in self.responses])

    def select(self, idx) -> "Rollout":
        return Rollout(self.input_ids[idx], self.labels[idx], self.last_index[idx], self.ended[idx],
                       self.gen_logprobs[idx], [self.responses[i] for i in idx], self.prompt_index[idx])


def encode_prompts(rows, tokenizer, max_length: int, pad_id: int, key: str = "data.train") -> List[List[int]]:
    """Token ids of each prompt row (mindtune.data.encoders.prompt_ids: too long, empty or pad-id prompts stop
    with their file:line)."""
    from mindtune.data.encoders import prompt_ids
    return [prompt_ids(tokenizer, row, where, max_length, pad_id, key) for where, row in rows]


def check_special_ids(pad_id: int, eos_ids: Sequence[int], where: str):
    if pad_id in set(eos_ids):
        raise ConfigError(f"{where}: the pad id {pad_id} is also an EOS id; the training network masks pad ids, so "
                          "every real EOS would be hidden (set a distinct pad token in the model's config)")


def sample(generator, prompts: Sequence[Sequence[int]], sampling, max_new_tokens: int, seed, eos_ids,
           pad_id: int, seq_length: int, prompt_index=None) -> Rollout:
    """Sample one response per prompt (repeat prompts for several) and lay the rows out for training."""
    check_special_ids(pad_id, eos_ids, "rollout")
    seed = int(np.random.SeedSequence(seed).generate_state(1)[0])
    out = generator.generate(list(prompts), max_new_tokens, sampling, seed=seed, eos_ids=sorted(eos_ids),
                             banned_ids=[pad_id])
    n = len(prompts)
    input_ids = np.full((n, seq_length), pad_id, np.int32)
    labels = np.full((n, seq_length), IGNORE, np.int32)
    gen_logprobs = np.zeros((n, seq_length), np.float32)
    last_index = np.zeros(n, np.int32)
    eos = set(int(e) for e in eos_ids)
    responses = out.rows()
    for i, (prompt, response) in enumerate(zip(prompts, responses)):
        p, r = len(prompt), len(response)
        if p + r > seq_length:
            raise ConfigError(f"rollout: {p} prompt + {r} response tokens exceed the sequence length {seq_length}")
        input_ids[i, :p] = prompt
        input_ids[i, p:p + r] = response
        labels[i, p - 1:p + r - 1] = response
        gen_logprobs[i, p - 1:p + r - 1] = out.logprobs[i, :r]
        last_index[i] = p + r - 1
    ended = np.array([bool(r) and r[-1] in eos for r in responses])
    index = np.arange(n) if prompt_index is None else np.asarray(prompt_index)
    return Rollout(input_ids, labels, last_index, ended, gen_logprobs, responses, index)


def turn_suffix(tokenizer, eos_ids) -> List[int]:
    """The tokens a chat template puts after an assistant turn's EOS (SmolLM2's and the tiny model's: "\n" after
    <|im_end|>). A reward model trained on rendered conversations reads its score at the last of them, so a
    response that ended with EOS gets them appended before it is scored (`reward_inputs`)."""
    if not tokenizer.chat_template:
        return []
    ids = tokenizer.encode(tokenizer.apply_chat_template([{"role": "user", "content": "x"},
                                                          {"role": "assistant", "content": "y"}]))
    ends = [i for i, t in enumerate(ids) if t in set(eos_ids)]
    return ids[ends[-1] + 1:] if ends else []


def reward_inputs(rollout: Rollout, suffix: Sequence[int]):
    """(input_ids, last_index) for the reward model: rows that ended with EOS continue with the template's
    `suffix`, as the conversations the reward model was trained on; the others are read at their last token."""
    ids, last = rollout.input_ids.copy(), rollout.last_index.copy()
    if suffix:
        for i in np.nonzero(rollout.ended)[0]:
            ids[i, last[i] + 1:last[i] + 1 + len(suffix)] = suffix
            last[i] += len(suffix)
    return ids, last


def batches(n: int, batch_size: int):
    """Index arrays covering range(n) in chunks of batch_size, the last one padded by repeating row 0 (callers
    drop the filler results); the compiled graphs see one batch shape only."""
    for start in range(0, n, batch_size):
        idx = np.arange(start, min(start + batch_size, n))
        yield idx, np.concatenate([idx, np.zeros(batch_size - len(idx), np.int64)])

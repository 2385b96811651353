"""Scalar heads on the backbone's final hidden states: the reward model's score head, later PPO's value head.

    head = ScoreHead(hidden_size)                 # parameter "score_head.weight" [1, hidden]
    values = head(hidden)                         # [B, S]: one scalar per position (a value head's output)
    rewards = gather_last(values, last_index)     # [B]: the score at each sequence's last real token
    RewardModel(network, head)(input_ids, last_index) -> rewards [B]

The head has no bias: the Bradley-Terry loss only sees reward differences, so a bias would get no gradient;
PPO normalises rewards with the mean/std saved beside the head instead.
"""
import numpy as np
from mindspore import Parameter, Tensor, nn, ops

from mindtune.errors import CheckpointError

SCORE_HEAD = "score_head"


class ScoreHead(nn.Cell):
    """hidden [..., H] -> [...] float32, a linear map to one number per position."""

    def __init__(self, hidden_size: int, seed: int = 0, name: str = SCORE_HEAD):
        super().__init__(auto_prefix=False)  # the parameter keeps its name however the head is nested
        # std 1/sqrt(H+1), as OpenAI's lm-human-preferences reward head: unit-scale rewards at the start
        rng = np.random.default_rng([seed, 7919])
        init = (rng.standard_normal((1, hidden_size)) / np.sqrt(hidden_size + 1)).astype(np.float32)
        self.weight = Parameter(Tensor(init), name=f"{name}.weight")

    def construct(self, hidden):
        return (hidden.astype("float32") * self.weight[0]).sum(-1)

    def weights(self) -> dict:
        return {self.weight.name: self.weight.asnumpy()}

    def load(self, weights: dict, where: str):
        value = weights.get(self.weight.name)
        if value is None:
            raise CheckpointError(f"{where}: no {self.weight.name!r} tensor; not a reward/value model directory")
        if tuple(value.shape) != tuple(self.weight.shape):
            raise CheckpointError(f"{where}: {self.weight.name!r} has shape {tuple(value.shape)}, "
                                  f"the model expects {tuple(self.weight.shape)}")
        self.weight.set_data(Tensor(np.ascontiguousarray(value, np.float32)))


def split_head_weights(weights: dict, name: str = SCORE_HEAD) -> tuple:
    """(backbone/adapter weights, head weights) of a saved weight dict."""
    head = {k: v for k, v in weights.items() if k.startswith(name + ".")}
    return {k: v for k, v in weights.items() if k not in head}, head


def gather_last(values, last_index):
    """values [B, S] at position last_index[b] of each row -> [B]."""
    return ops.gather_elements(values, 1, last_index.astype("int32").expand_dims(-1)).squeeze(-1)


class RewardModel(nn.Cell):
    """rewards [B] = head(final hidden states) at each sequence's last real token.

    network: any adapted CausalLM (`logits, hidden = network(input_ids)`); input_ids right padded with the pad
    id, which attention masks, so the hidden state at the last real token ignores the padding.
    """

    def __init__(self, network, head: ScoreHead):
        super().__init__(auto_prefix=False)
        self.network = network
        self.head = head

    def construct(self, input_ids, last_index):
        _, hidden = self.network(input_ids)
        return gather_last(self.head(hidden), last_index)

"""The host-side maths of an RL iteration, in numpy: per-token rewards with the KL penalty, GAE, whitening and
the adaptive KL controller. Arrays are [rows, positions] aligned with the pre-shifted `labels` of a rollout
(position t scores the action input_ids[t + 1]); `mask` is 1.0 on response actions, 0 elsewhere (prompt,
padding, and anything after a row's EOS).

Sign convention (InstructGPT eq. 2): reward_t = -kl_coef * KL_t + [t is the last action] * score, so moving
away from the reference lowers the reward. MindRLHF adds the KL with the opposite sign; a test guards ours.
"""
from dataclasses import dataclass

import numpy as np


def kl_per_token(logp: np.ndarray, ref_logp: np.ndarray, estimator: str = "k1") -> np.ndarray:
    """Per-token estimate of KL(policy || reference) from actions sampled by the policy.

    k1: log p - log ref (unbiased, can be negative). k3: r - 1 - log r with r = ref / p (Schulman 2020;
    unbiased and never negative).
    """
    log_ratio = logp.astype(np.float64) - ref_logp.astype(np.float64)
    if estimator == "k1":
        return log_ratio
    if estimator == "k3":
        return np.expm1(-log_ratio) + log_ratio
    raise ValueError(f"unknown KL estimator {estimator!r}")


def last_action_index(mask: np.ndarray) -> np.ndarray:
    """[rows] index of each row's last response action (its EOS if it has one); -1 for an empty row."""
    positions = np.arange(mask.shape[1])[None, :]
    return np.where(mask > 0, positions, -1).max(axis=1)


def token_rewards(score: np.ndarray, kl: np.ndarray, mask: np.ndarray, kl_coef: float) -> np.ndarray:
    """-kl_coef * kl on every response action, plus the sequence score on the last one; 0 elsewhere."""
    rewards = -kl_coef * kl * mask
    last = last_action_index(mask)
    rows = np.nonzero(last >= 0)[0]
    rewards[rows, last[rows]] += score[rows]
    return rewards


def gae(rewards: np.ndarray, values: np.ndarray, mask: np.ndarray, gamma: float, lam: float):
    """(advantages, returns) by generalised advantage estimation over each row's response actions.

    The value after the last action is 0 (the episode ends there); positions outside the mask are skipped, so a
    prompt of any length before the response and padding after it change nothing.
    """
    advantages = np.zeros_like(rewards, dtype=np.float64)
    for row in range(rewards.shape[0]):
        steps = np.nonzero(mask[row] > 0)[0]
        running, next_value = 0.0, 0.0
        for t in steps[::-1]:
            delta = rewards[row, t] + gamma * next_value - values[row, t]
            running = delta + gamma * lam * running
            advantages[row, t] = running
            next_value = values[row, t]
    returns = (advantages + values) * mask
    return advantages * mask, returns


def whiten(x: np.ndarray, mask: np.ndarray, shift_mean: bool = True) -> np.ndarray:
    """(x - mean) / std over the masked entries (unbiased variance, as TRL's masked_whiten); 0 outside."""
    count = mask.sum()
    if count < 2:
        return x * mask
    mean = (x * mask).sum() / count
    var = (((x - mean) * mask) ** 2).sum() / (count - 1)
    out = (x - mean) / np.sqrt(var + 1e-8)
    if not shift_mean:
        out = out + mean
    return out * mask


def masked_mean(x: np.ndarray, mask: np.ndarray) -> float:
    return float((x * mask).sum() / max(mask.sum(), 1.0))


@dataclass
class KLController:
    """The KL coefficient: fixed, or adaptive as in Ziegler et al. 2019 (section 2.2):
    error = clip(KL / target - 1, -0.2, 0.2); coef *= 1 + error * n_steps / horizon."""
    value: float
    adaptive: bool = False
    target: float = 6.0
    horizon: int = 10000

    def update(self, measured_kl: float, n_steps: int) -> float:
        if self.adaptive:
            error = float(np.clip(measured_kl / self.target - 1.0, -0.2, 0.2))
            self.value *= 1.0 + error * n_steps / self.horizon
        return self.value


def normalise_scores(scores: np.ndarray, mean: float, std: float, clip: float) -> np.ndarray:
    """The reward model's scores standardised with its saved statistics, clipped to [-clip, clip]."""
    out = (scores - mean) / max(std, 1e-8)
    return np.clip(out, -clip, clip) if clip > 0 else out

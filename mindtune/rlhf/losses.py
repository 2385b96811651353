"""RLHF losses as small pure functions over MindSpore tensors (all RL losses live in this one file).

Reward model (InstructGPT step 2):
    pairwise_loss      Bradley-Terry: -log sigmoid(r_chosen - r_rejected - margin), plus an optional
                       center-rewards term coef * mean((r_chosen + r_rejected)^2) that keeps rewards near zero
                       (Eisenstein et al. 2023, "Helping or herding?").
    pairwise_metrics   accuracy, mean margin, mean and std of the rewards.

Every function takes an optional `weight` [B] (1 for a real pair, 0 for filler that pads the last evaluation
batch to the compiled batch size); means are taken over the weighted pairs only.
"""
from mindspore import ops


def log_sigmoid(x):
    """log sigmoid(x) = -softplus(-x), written to stay finite for large |x| in float32."""
    return ops.minimum(x, 0.0) - ops.log1p(ops.exp(-ops.abs(x)))


def _weighted_mean(x, weight):
    if weight is None:
        return x.mean()
    return (x * weight).sum() / ops.maximum(weight.sum(), 1.0)


def pairwise_loss(r_chosen, r_rejected, margin=None, center_coef: float = 0.0, weight=None):
    """Bradley-Terry loss of a batch of pairs; rewards float32 [B], margin float32 [B] or None."""
    diff = r_chosen - r_rejected
    if margin is not None:
        diff = diff - margin
    loss = _weighted_mean(-log_sigmoid(diff), weight)
    if center_coef:
        loss = loss + center_coef * _weighted_mean((r_chosen + r_rejected) ** 2, weight)
    return loss


def pairwise_metrics(r_chosen, r_rejected, weight=None):
    """(accuracy, mean margin, reward mean, reward std) over the pairs; a tie counts as wrong.

    The mean and std are over the 2B rewards of chosen and rejected together (population std): the numbers
    PPO uses to normalise the reward model's scores.
    """
    diff = r_chosen - r_rejected
    accuracy = _weighted_mean((diff > 0).astype(diff.dtype), weight)
    rewards = ops.concat((r_chosen, r_rejected))
    w2 = None if weight is None else ops.concat((weight, weight))
    mean = _weighted_mean(rewards, w2)
    std = ops.sqrt(_weighted_mean((rewards - mean) ** 2, w2))
    return accuracy, _weighted_mean(diff, weight), mean, std


# ---- policy-gradient losses (PPO, GRPO): tensors [B, T] aligned with pre-shifted labels, mask 1 on actions --

def masked_mean(x, mask):
    """Mean of x over the entries where mask is 1 (0 if there are none)."""
    return (x * mask).sum() / ops.maximum(mask.sum(), 1.0)


def kl_estimate(logp, ref_logp, estimator: str = "k3"):
    """Per-token KL(policy || reference) estimate: k1 = log p - log ref; k3 = r - 1 - log r, r = ref / p
    (never negative). The numpy twin for reward shaping is mindtune.rlhf.advantages.kl_per_token."""
    log_ratio = logp - ref_logp
    if estimator == "k1":
        return log_ratio
    return ops.exp(-log_ratio) - 1.0 - (-log_ratio)


def clipped_policy_loss(logp, old_logp, advantages, mask, clip_low: float, clip_high: float):
    """PPO's clipped surrogate per token: max(-A r, -A clip(r, 1 - clip_low, 1 + clip_high)), r = p / p_old.
    Returns (per-token loss, per-token 1.0 where the clipped side was taken)."""
    ratio = ops.exp(logp - old_logp)
    unclipped = -advantages * ratio
    clipped = -advantages * ops.clip_by_value(ratio, 1.0 - clip_low, 1.0 + clip_high)
    loss = ops.maximum(unclipped, clipped)
    return loss * mask, (clipped > unclipped).astype(loss.dtype) * mask


def clipped_value_loss(values, old_values, returns, mask, clip: float):
    """0.5 * max((v - R)^2, (v_clipped - R)^2) per token, v_clipped = v_old + clip(v - v_old, -c, c).
    Returns (per-token loss, per-token 1.0 where the clipped side was larger)."""
    clipped_values = old_values + ops.clip_by_value(values - old_values, -clip, clip)
    plain, clipped = (values - returns) ** 2, (clipped_values - returns) ** 2
    return 0.5 * ops.maximum(plain, clipped) * mask, (clipped > plain).astype(values.dtype) * mask


def entropy_from_logits(logits):
    """Entropy of softmax(logits) over the last axis: logsumexp(z) - sum softmax(z) z."""
    probs = ops.softmax(logits, -1)
    return ops.logsumexp(logits, -1) - (probs * logits).sum(-1)


# -- DPO family (direct preference optimisation; stage dpo) ----------------------------------------------------
# Inputs are per-pair sequence log-probabilities of the response tokens: summed for sigmoid (DPO), averaged per
# token for ipo (as TRL does) and simpo (length normalisation is SimPO's point); simpo has no reference (pass 0).
def dpo_loss(policy_chosen, policy_rejected, ref_chosen, ref_rejected, loss_type: str = "sigmoid",
             beta: float = 0.1, label_smoothing: float = 0.0, gamma: float = 0.0, weight=None):
    """(loss, implicit reward of chosen [B], of rejected [B]) of a batch of pairs.

    h = (pi_c - ref_c) - (pi_r - ref_r), the log-ratio margin.
    sigmoid  -(1 - ls) log sigma(beta h) - ls log sigma(-beta h)      (DPO; conservative DPO with ls > 0)
    ipo      (h - 1 / (2 beta))^2                                      (IPO)
    simpo    -(1 - ls) log sigma(beta h - gamma) - ls log sigma(gamma - beta h), references 0   (SimPO)
    The implicit rewards are beta (pi - ref) of each side.
    """
    chosen = policy_chosen - ref_chosen
    rejected = policy_rejected - ref_rejected
    h = chosen - rejected
    if loss_type == "ipo":
        losses = (h - 1.0 / (2.0 * beta)) ** 2
    else:
        z = beta * h - gamma if loss_type == "simpo" else beta * h
        losses = -(1.0 - label_smoothing) * log_sigmoid(z) - label_smoothing * log_sigmoid(-z)
    return _weighted_mean(losses, weight), beta * chosen, beta * rejected


# -- GRPO (group relative policy optimisation; stage grpo) -----------------------------------------------------
def grpo_loss(logp, old_logp, ref_logp, advantages, mask, epsilon: float, epsilon_high: float = 0.0,
              beta: float = 0.0, loss_type: str = "token"):
    """(loss, mean k3 KL per token, clip fraction) of a batch of sampled responses.

    logp, old_logp, ref_logp, mask [B, T] aligned with pre-shifted labels; advantages [B], one per response (its
    group-relative reward). Per token: the clipped surrogate with ratio bounds [1 - epsilon, 1 + epsilon_high]
    (epsilon_high 0 = epsilon) plus beta x k3 KL to the reference. loss_type token: the mean over every response
    token of the batch (DAPO, Dr. GRPO); sequence: each response's token mean, then the mean over responses
    (the original GRPO, which weighs a short response's tokens more).
    """
    adv = advantages.expand_dims(-1) * mask
    per_token, clipped = clipped_policy_loss(logp, old_logp, adv, mask, epsilon, epsilon_high or epsilon)
    kl = kl_estimate(logp, ref_logp, "k3") * mask
    if beta:
        per_token = per_token + beta * kl
    if loss_type == "sequence":
        counts = mask.sum(-1)
        rows = (counts > 0).astype(logp.dtype)
        loss = ((per_token * mask).sum(-1) / ops.maximum(counts, 1.0)).sum() / ops.maximum(rows.sum(), 1.0)
    else:
        loss = masked_mean(per_token, mask)
    return loss, masked_mean(kl, mask), masked_mean(clipped, mask)

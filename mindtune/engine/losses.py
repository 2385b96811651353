"""Loss cells shared by the stages (pure MindSpore; no model-specific code)."""
from mindspore import nn, ops
from mindspore.common import dtype as mstype

from mindtune.models.causal_lm import output_projection

IGNORE = -100


class LabelLogProbs(nn.Cell):
    """log_softmax(logits)[..., label] for logits [..., V] and int32 labels [...] in [0, V): MindSpore's log-softmax
    and gather, or `fused` (a CPU kernel forward and one backward, `mindtune.cpu_kernels.label_log_softmax`) for
    float32 logits once `use_fused` has set it."""

    def __init__(self):
        super().__init__()
        self.fused = None

    def use_fused(self, op):
        self.fused = op

    def construct(self, logits, labels):
        if self.fused is None or logits.dtype != mstype.float32:
            logp = ops.log_softmax(logits, -1)
            return ops.gather_elements(logp, -1, labels.expand_dims(-1)).squeeze(-1)
        picked, _ = self.fused(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1))
        return picked.reshape(labels.shape)


LABEL_LOG_PROBS = LabelLogProbs()   # one for the process: `mindtune.device.setup_context` chooses its kernels


def token_log_probs(logits, labels):
    """log p(label | prefix) per position; positions whose label is IGNORE get 0. logits float32 [..., V],
    labels int32 [...]."""
    mask = labels != IGNORE
    safe = ops.where(mask, labels, ops.zeros_like(labels))
    picked = LABEL_LOG_PROBS(logits, safe)
    return picked * mask.astype(picked.dtype), mask.astype(picked.dtype)


def labelled_logits(hidden, lm_head, label_at):
    """float32 logits [K, V] of the final hidden states [N, T, H] at the flat positions `label_at` [K] (row * T + t):
    the output projection runs at those positions only (the network's own [N, T, V] logits are then unused, and
    graph mode removes them)."""
    picked = ops.gather(hidden.reshape(-1, hidden.shape[-1]), label_at, 0)
    return lm_head(picked).astype("float32")


def labelled_log_probs(hidden, lm_head, label_at, label_ids):
    """(log p [K], mask [K]) of the targets `label_ids` at the flat positions `label_at` of the final hidden states
    [N, T, H], projected and log-softmaxed there only. Padded entries (label IGNORE) give 0 and mask 0
    (`mindtune.engine.buckets.gather_labels` builds the pair)."""
    return token_log_probs(labelled_logits(hidden, lm_head, label_at), label_ids)


def row_label_log_probs(hidden, lm_head, label_at, label_ids):
    """(sum [N], count [N]): per row of hidden [N, T, H], the summed log-probabilities of its labelled tokens and
    how many there are, from the K gathered positions (`labelled_log_probs`) by a segment sum over label_at // T.
    Padded entries add 0 to both. What a sequence-level loss (DPO, likelihood scoring) needs from a forward."""
    logp, mask = labelled_log_probs(hidden, lm_head, label_at, label_ids)
    rows, row = hidden.shape[0], label_at // hidden.shape[1]
    return ops.unsorted_segment_sum(logp, row, rows), ops.unsorted_segment_sum(mask, row, rows)


def scatter_positions(values, label_at, shape):
    """`values` [K] put back at the flat positions `label_at` of an [N, T] `shape`, 0 elsewhere (the padded entries
    of a gathered batch point at index 0 and must hold 0, as token_log_probs gives them)."""
    return ops.unsorted_segment_sum(values, label_at, shape[0] * shape[1]).reshape(shape)


def gathered_log_probs(hidden, lm_head, label_at, label_ids, inv_temperature: float = 1.0):
    """(logits [K, V] / temperature, log p [N, T], mask [N, T]) for the targets `label_ids` at the flat positions
    `label_at` of the final hidden states [N, T, H]: projected and log-softmaxed at those K positions only, the
    log-probabilities and mask then put back in place (0 elsewhere) for per-token RL maths (PPO, GRPO)."""
    logits = labelled_logits(hidden, lm_head, label_at) * inv_temperature
    logp, mask = token_log_probs(logits, label_ids)
    shape = hidden.shape[:2]
    return logits, scatter_positions(logp, label_at, shape), scatter_positions(mask, label_at, shape)


class CausalLMLoss(nn.Cell):
    """Mean next-token cross-entropy over the labelled positions. Returns (loss, (labelled token count,)).

        loss, (count,) = CausalLMLoss(network)(input_ids, label_at, label_ids[, positions, segments])

    label_at, label_ids: int32 [K], the labelled positions as flat indices (row * T + t) and their targets,
        padded with index 0 and IGNORE (`mindtune.engine.buckets.gather_labels` builds them from [B, T] labels).
    positions, segments: given for packed sequences (mindtune.data.packing), passed on to the network.

    The output projection and the log-softmax over the vocabulary run at the K gathered positions only: an SFT
    row's prompt and padding carry no label, and their logits ([B, T, V] of them, the largest tensors of the
    step) would only be thrown away. The network's own logits are then unused, and graph mode removes them.
    """

    def __init__(self, network):
        super().__init__(auto_prefix=False)
        self.network = network
        self.lm_head = output_projection(network)

    def construct(self, input_ids, label_at, label_ids, positions=None, segments=None):
        if segments is None:
            _, hidden = self.network(input_ids)
        else:
            _, hidden = self.network(input_ids, None, None, positions, segments)
        logp, mask = labelled_log_probs(hidden, self.lm_head, label_at, label_ids)
        count = mask.sum()
        loss = -logp.sum() / ops.maximum(count, 1.0)
        return loss, (count,)

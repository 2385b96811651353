"""Loss cells shared by the stages (pure MindSpore; no model-specific code)."""
from mindspore import nn, ops

from mindtune.models.causal_lm import output_projection

IGNORE = -100


def token_log_probs(logits, labels):
    """log p(label | prefix) per position; positions whose label is IGNORE get 0. logits float32 [..., V],
    labels int32 [...]."""
    mask = labels != IGNORE
    safe = ops.where(mask, labels, ops.zeros_like(labels))
    logp = ops.log_softmax(logits, -1)
    picked = ops.gather_elements(logp, -1, safe.expand_dims(-1)).squeeze(-1)
    return picked * mask.astype(picked.dtype), mask.astype(picked.dtype)


def labelled_log_probs(hidden, lm_head, label_at, label_ids):
    """(log p [K], mask [K]) of the targets `label_ids` at the flat positions `label_at` (row * T + t) of the final
    hidden states [N, T, H]: the output projection `lm_head` and the log-softmax run at those K positions only.
    Padded entries (label IGNORE) give 0 and mask 0 (`mindtune.engine.buckets.gather_labels` builds the pair)."""
    picked = ops.gather(hidden.reshape(-1, hidden.shape[-1]), label_at, 0)
    logits = lm_head(picked).astype("float32")
    return token_log_probs(logits, label_ids)


def row_label_log_probs(hidden, lm_head, label_at, label_ids):
    """(sum [N], count [N]): per row of hidden [N, T, H], the summed log-probabilities of its labelled tokens and
    how many there are, from the K gathered positions (`labelled_log_probs`) by a segment sum over label_at // T.
    Padded entries add 0 to both. What a sequence-level loss (DPO; PPO and GRPO later) needs from a forward."""
    logp, mask = labelled_log_probs(hidden, lm_head, label_at, label_ids)
    rows, row = hidden.shape[0], label_at // hidden.shape[1]
    return ops.unsorted_segment_sum(logp, row, rows), ops.unsorted_segment_sum(mask, row, rows)


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

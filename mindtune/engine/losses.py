"""Loss cells shared by the stages (pure MindSpore; no model-specific code)."""
from mindspore import nn, ops

IGNORE = -100


def token_log_probs(logits, labels):
    """log p(label_t | prefix) per position; positions whose label is IGNORE get 0. logits float32 [B,T,V]."""
    mask = labels != IGNORE
    safe = ops.where(mask, labels, ops.zeros_like(labels))
    logp = ops.log_softmax(logits, -1)
    picked = ops.gather_elements(logp, -1, safe.expand_dims(-1)).squeeze(-1)
    return picked * mask.astype(picked.dtype), mask.astype(picked.dtype)


class CausalLMLoss(nn.Cell):
    """Mean next-token cross-entropy over the labelled positions. Returns (loss, (labelled token count,)).

    positions, segments: given for packed sequences (mindtune.data.packing), passed on to the network."""

    def __init__(self, network):
        super().__init__(auto_prefix=False)
        self.network = network

    def construct(self, input_ids, labels, positions=None, segments=None):
        if segments is None:
            logits, _ = self.network(input_ids)
        else:
            logits, _ = self.network(input_ids, None, None, positions, segments)
        logp, mask = token_log_probs(logits, labels)
        count = mask.sum()
        loss = -logp.sum() / ops.maximum(count, 1.0)
        return loss, (count,)

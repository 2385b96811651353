"""Greedy generation through the training network (MindFormers Llama, no cache): every step recomputes the whole
sequence. Slow; it is the yardstick the cached decoder is checked against."""
import numpy as np


def greedy_uncached(causal_lm, prompts, max_new_tokens: int, seq_length: int, pad_id: int, eos_ids=()):
    """causal_lm: a mindtune CausalLM built for [len(prompts), seq_length]. Rows are right-padded with `pad_id`
    (causal attention never looks right of a position, so padding there changes nothing). Returns a list of
    token lists, each cut after its first EOS."""
    import mindspore as ms

    seqs = [list(p) for p in prompts]
    done = [False] * len(seqs)
    for _ in range(max_new_tokens):
        if len(max(seqs, key=len)) >= seq_length:
            raise ValueError(f"seq_length {seq_length} is too short for {max_new_tokens} new tokens")
        batch = np.full((len(seqs), seq_length), pad_id, np.int32)
        for i, s in enumerate(seqs):
            batch[i, :len(s)] = s
        logits, _ = causal_lm(ms.Tensor(batch))
        logits = logits.asnumpy()
        for i, s in enumerate(seqs):
            if not done[i]:
                s.append(int(logits[i, len(s) - 1].argmax()))
                done[i] = s[-1] in eos_ids
        if all(done):
            break
    return [s[len(p):] for s, p in zip(seqs, prompts)]

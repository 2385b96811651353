"""Log-likelihood of continuations under a model, through the training network (MindFormers' Llama):
multiple-choice scoring and perplexity. No generation; one compiled shape for all rows."""
from typing import List, Sequence, Tuple

import numpy as np

from mindtune.errors import ConfigError


class LogLikelihood:
    """`score(pairs)` -> [(sum of log p(continuation tokens | context), number of tokens)] for
    (context ids, continuation ids) pairs, batched `batch_size` rows at a time."""

    def __init__(self, spec, weights: dict, profile, batch_size: int = 8, where: str = "--model"):
        self.spec, self.weights, self.profile = spec, weights, profile
        self.batch_size, self.where = batch_size, where
        self._cell, self._length = None, 0

    def _cell_for(self, length: int):
        if self._cell is None or length > self._length:
            from mindtune.engine.cell_reuse import key_repeated
            from mindtune.models.build import build_llama, load_weights
            from mindtune.models.causal_lm import CausalLM

            self._length = max(32, -(-length // 32) * 32)
            if self._length > self.spec.max_position:
                raise ConfigError(f"{self.where}: a context and choice of {length} tokens exceed the model's "
                                  f"{self.spec.max_position} positions")
            llama = build_llama(self.spec, self.profile, self._length, self.batch_size, initialise=False)
            load_weights(llama, self.weights, where=self.where)
            self._cell = _SequenceLogProb(CausalLM(llama))
            self._cell.set_train(False)
            key_repeated(self._cell)     # compile one layer for all (engine/cell_reuse.py; CPU profile)
        return self._cell

    def score(self, pairs: Sequence[Tuple[List[int], List[int]]]) -> List[Tuple[float, int]]:
        import mindspore as ms

        if not pairs:
            return []
        pad, b = self.spec.pad_token_id, self.batch_size
        from mindtune.engine.buckets import gather_labels, plan_label_budgets

        cell = self._cell_for(max(len(c) + len(x) for c, x in pairs))
        # the continuations' tokens are the only positions scored: a static number a batch, planned once
        budgets = plan_label_budgets([self._length], [b * max(len(x) for _, x in pairs)], b)
        out = []
        for start in range(0, len(pairs), b):
            chunk = pairs[start:start + b]
            ids = np.full((b, self._length), pad, np.int32)
            labels = np.full((b, self._length), -100, np.int32)
            for i, (context, continuation) in enumerate(chunk):
                seq = list(context) + list(continuation)
                ids[i, :len(seq)] = seq
                # position t predicts token t + 1: the continuation's tokens are labels of the positions before
                labels[i, len(context) - 1:len(seq) - 1] = continuation
            total, count = cell(*(ms.Tensor(x) for x in gather_labels((ids, labels), budgets)))
            total, count = total.asnumpy(), count.asnumpy()
            out.extend((float(total[i]), int(count[i])) for i in range(len(chunk)))
        return out


def _cell_class():
    from mindspore import nn

    from mindtune.engine.losses import row_label_log_probs
    from mindtune.models.causal_lm import output_projection

    class SequenceLogProb(nn.Cell):
        """Per row: the summed log-probability of the labelled tokens, and their number; the output projection
        runs at the gathered label positions only."""

        def __init__(self, network):
            super().__init__(auto_prefix=False)
            self.network = network
            self.lm_head = output_projection(network)

        def construct(self, input_ids, label_at, label_ids):
            _, hidden = self.network(input_ids)
            return row_label_log_probs(hidden, self.lm_head, label_at, label_ids)

    return SequenceLogProb


def _SequenceLogProb(network):
    return _cell_class()(network)

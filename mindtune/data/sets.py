"""Training sets over cache entries: rows are read memory-mapped and padded only when a batch asks for them.

A set holds one or more parts (the sources of a mixture), indexed as one: rows 0..n0-1 are the first source's,
then the second's, and so on. `sizes` and `weights` tell the sampler how to draw from them.

    SFTSet         len, lengths, label_counts, batch(idx) -> (input_ids [b, L] int32 right-padded with the pad
                   id, labels [b, L] int32 with IGNORE; labels[t] is the target of position t)
    PreferenceSet  the rm/dpo view: chosen/rejected ids and labels as padded views, last indices, margins,
                   label_counts (both sides' labelled positions per pair)
    PromptSet      a sequence of prompt token lists; `rows[i]` = (where, row) for GRPO's rewards
"""
import json
from functools import cached_property
from typing import List

import numpy as np

from mindtune.data.cache import CacheView

IGNORE = -100


class Part:
    """One source's cache entry, optionally cut to the rows among the file's first `limit` rows."""

    def __init__(self, view: CacheView, path: str, label: str, weight: float, limit: int = 0):
        self.view, self.path, self.label, self.weight = view, path, label, weight
        self.size = len(view) if not limit else int(np.searchsorted(view.array("ordinal"), limit))

    def where(self, i: int) -> str:
        line = int(self.view.array("line")[i])
        return f"{self.path}:{line}" if self.view.meta["where"] == "line" else f"{self.path}:row {line}"


class _Parts:
    def __init__(self, parts: List[Part], pad_id: int, max_length: int):
        self.parts, self.pad_id, self.max_length = parts, pad_id, max_length
        self.sizes = [p.size for p in parts]
        self.weights = [p.weight for p in parts]
        self.names = [p.label for p in parts]        # source names, for the per-source row counts
        self.starts = np.concatenate([[0], np.cumsum(self.sizes)]).astype(np.int64)
        self.dropped = sum(p.view.meta["dropped"] for p in parts)
        self.bad_rows = sum(p.view.meta["bad_rows"] for p in parts)

    def __len__(self):
        return int(self.starts[-1])

    def locate(self, i: int):
        s = int(np.searchsorted(self.starts, i, side="right") - 1)
        return self.parts[s], int(i - self.starts[s])

    def source_of(self, idx) -> np.ndarray:
        return np.searchsorted(self.starts, np.asarray(idx), side="right") - 1

    def _lengths(self, field: str) -> np.ndarray:
        return np.concatenate([p.view.lengths(field)[:p.size] for p in self.parts])

    def _padded(self, field: str, idx, fill: int, marks: str = None) -> np.ndarray:
        """Rows `idx` of a token field right-padded to max_length; with `marks` (the field marking the labelled
        tokens) the pre-shifted labels instead."""
        idx = np.asarray(idx).reshape(-1)
        out = np.full((len(idx), self.max_length), fill, np.int32)
        for row, i in enumerate(idx):
            part, local = self.locate(int(i))
            tokens = part.view.seq(field, local)
            if marks:   # labels[t] = token t + 1 where that token carries a label
                labelled = part.view.seq(marks, local)
                out[row, :len(tokens) - 1] = np.where(labelled[1:] != 0, tokens[1:], IGNORE)
            else:
                out[row, :len(tokens)] = tokens
        return out


class SFTSet(_Parts):
    def __init__(self, parts, pad_id, max_length):
        super().__init__(parts, pad_id, max_length)
        self.lengths = self._lengths("tokens")

    @cached_property
    def label_counts(self) -> np.ndarray:
        """Labelled positions per row, read on first use (the SFT stage plans its shapes from them)."""
        return np.concatenate([_label_counts(p.view)[:p.size] for p in self.parts])

    def batch(self, idx):
        return self._padded("tokens", idx, self.pad_id), self._padded("tokens", idx, IGNORE, marks="marks")


def _label_counts(view: CacheView, field: str = "marks") -> np.ndarray:
    """Labelled positions per row: token t + 1 carrying a label (mark 1) labels position t, so a row's count is
    its marks after the first token. One sequential pass over the marks file (`field`)."""
    marks, offsets = view.array(field), np.asarray(view.array(field + ".offsets"), np.int64)
    counts = np.zeros(len(offsets) - 1, np.int64)
    filled = offsets[1:] > offsets[:-1]
    if filled.any():
        starts = offsets[:-1][filled]
        counts[filled] = np.add.reduceat(marks, starts, dtype=np.int64) - marks[starts]
    return counts


class PaddedView:
    """`view[idx]` -> int32 [len(idx), L] for an index array or a slice; `shape` as a padded array's."""

    def __init__(self, owner: _Parts, field: str, fill: int, marks: str = None):
        self.owner, self.field, self.fill, self.marks = owner, field, fill, marks
        self.shape = (len(owner), owner.max_length)

    def __len__(self):
        return self.shape[0]

    def __getitem__(self, idx):
        if isinstance(idx, slice):
            idx = np.arange(len(self.owner))[idx]
        return self.owner._padded(self.field, idx, self.fill, self.marks)


class PreferenceSet(_Parts):
    """The same attributes as data.preference.PreferenceSet, read from the cache."""

    def __init__(self, parts, pad_id, max_length):
        super().__init__(parts, pad_id, max_length)
        self.chosen = PaddedView(self, "chosen", pad_id)
        self.rejected = PaddedView(self, "rejected", pad_id)
        self.chosen_labels = PaddedView(self, "chosen", IGNORE, marks="chosen_marks")
        self.rejected_labels = PaddedView(self, "rejected", IGNORE, marks="rejected_marks")
        chosen, rejected = self._lengths("chosen"), self._lengths("rejected")
        self.chosen_last, self.rejected_last = chosen - 1, rejected - 1
        self.lengths = np.maximum(chosen, rejected)
        self.margin = np.concatenate([np.asarray(p.view.array("margin")[:p.size]) for p in parts]).astype(np.float32)

    @cached_property
    def label_counts(self) -> np.ndarray:
        """Labelled positions per pair, chosen's plus rejected's, read on first use (DPO plans its shapes from them)."""
        return np.concatenate([(_label_counts(p.view, "chosen_marks") + _label_counts(p.view, "rejected_marks"))
                               [:p.size] for p in self.parts])


class PromptSet(_Parts):
    """prompts[i] -> list of token ids; prompts.rows[i] -> (where, row dict)."""

    def __init__(self, parts, pad_id, max_length):
        super().__init__(parts, pad_id, max_length)
        self.lengths = self._lengths("tokens")
        self.rows = _Rows(self)

    def __getitem__(self, i):
        if isinstance(i, slice):
            return [self[k] for k in range(len(self))[i]]
        part, local = self.locate(int(i))
        return part.view.seq("tokens", local).tolist()


class _Rows:
    def __init__(self, owner: PromptSet):
        self.owner = owner

    def __len__(self):
        return len(self.owner)

    def __getitem__(self, i):
        part, local = self.owner.locate(int(i))
        return part.where(local), json.loads(part.view.seq("row", local).tobytes().decode("utf-8"))

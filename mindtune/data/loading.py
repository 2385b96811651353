"""What a stage (or `mindtune prepare`) calls to get its data: every source of data.train / data.eval through the
tokenized cache, opened memory-mapped as the stage's kind of set, with a one-line report per source."""
import os
from typing import List, Optional

from mindtune.data.cache import CacheView, ensure_cache
from mindtune.data.encoders import STAGE_KINDS, Encoding
from mindtune.data.sets import Part, PreferenceSet, PromptSet, SFTSet
from mindtune.data.sources import Source, parse_sources

SETS = {"sft": SFTSet, "preference": PreferenceSet, "prompt": PromptSet}


def train_sources(config) -> List[Source]:
    return parse_sources(config.data.train, "data.train", config.data.columns)


def eval_sources(config) -> List[Source]:
    return parse_sources(config.data.eval, "data.eval", config.data.columns)


def is_lead_process() -> bool:
    """Rank 0 under msrun (or a single process): the one that prints reports."""
    return os.environ.get("RANK_ID", "0") == "0"


def open_set(kind: str, sources: List[Source], tokenizer, pad_id: int, max_length: int, data_cfg, limit: int = 0,
             train_on_prompt: Optional[bool] = None):
    """The set of `kind` over `sources`, each built into the cache first if needed (`limit`: the rows among each
    file's first `limit` rows)."""
    encoding = Encoding(kind, max_length, data_cfg.truncation,
                        data_cfg.train_on_prompt if train_on_prompt is None else train_on_prompt, pad_id)
    parts = []
    for source in sources:
        entry = ensure_cache(source, tokenizer, encoding, data_cfg.cache_dir, data_cfg.num_workers,
                             data_cfg.skip_bad_rows, progress=is_lead_process())
        if is_lead_process():
            print(report(source, entry), flush=True)
        parts.append(Part(CacheView(entry.directory, entry.meta), source.path, source.label, source.weight, limit))
    return SETS[kind](parts, pad_id, max_length)


def report(source: Source, entry) -> str:
    meta = entry.meta
    how = (f"built in {meta['seconds']:.1f} s with {meta['workers']} worker(s)" if entry.built else "reused")
    line = (f"{source.key} {source.path}: {meta['rows']} rows cached ({meta['dropped']} dropped as too long"
            f"{', ' + str(meta['bad_rows']) + ' bad rows skipped' if meta['bad_rows'] else ''}); {how}: "
            f"{entry.directory}")
    if meta["bad_rows"]:
        line += "\n  bad rows (first {}): {}".format(len(meta["bad_examples"]), "; ".join(meta["bad_examples"]))
    return line


def stage_sets(config, tokenizer, pad_id: int, eval_limit: Optional[int] = None):
    """(train set, eval set or None) for the config's stage; eval_limit defaults to data.eval_rows."""
    kind = STAGE_KINDS[config.stage]
    data = config.data
    train = open_set(kind, train_sources(config), tokenizer, pad_id, data.max_length, data)
    held_out = None
    if data.eval:
        limit = data.eval_rows if eval_limit is None else eval_limit
        held_out = open_set(kind, eval_sources(config), tokenizer, pad_id, data.max_length, data, limit=limit)
    return train, held_out

"""MindSpore's graph compile cache, made safe to leave on: a run that compiles what an earlier run compiled loads it.

Why: compiling a 30-layer model's training step takes about half a minute on CPU even with one layer compiled
for all (engine/cell_reuse.py); loading the same graph from the cache takes a few seconds (SmolLM2 LoRA: first
step 24-27 s cold, 10-17 s warm). What MindSpore 2.9.0's cache does not do, measured on CPU:
- it names cached graphs by the order in which the process compiled them (compile_cache_0.mindir, _1, ...) and
  loads graph N for the process's N-th compile without comparing input shapes or parameters: a graph compiled
  for 2 rows ran silently on 3 rows and returned the 2-row answer;
- switching `compile_cache_path` between compiles in one process loaded graphs from the wrong directory;
- a graph compiled from an `ms.jit` function binds no parameters when loaded (see engine/graph.py).
So mindtune turns the cache on only around its own compiles (MindSpore then counts only those), keeps one
directory per process keyed by everything that decides the graphs' contents, and records in a manifest which
graph (name, argument shapes, parameter shapes, cell classes) each index holds: an index whose graph differs is
deleted before MindSpore can load it. A lock per directory keeps two runs from writing the same index at once.
"""
import contextlib
import functools
import glob
import hashlib
import json
import os
import sys

from mindtune.atomic import atomic_write
from mindtune.data.cache import default_cache_dir, locked

# Config keys that never reach a compiled graph: the host reads them (data arrives as arrays whose shapes are in
# each graph's signature; the lr is an argument of the update graph).
HOST_ONLY = ("output_dir", "data", "train.max_steps", "train.lr", "train.schedule", "train.warmup_steps",
             "train.min_lr_ratio", "train.log_every", "train.eval_every", "train.save_every", "train.save_total_limit",
             "train.resume", "train.resume_changed", "train.eval_metrics", "train.eval_max_new_tokens",
             "train.compile_cache")

KEEP_RUNS = 16                                 # key directories kept under <cache>/graphs
_process = {"directory": None, "count": 0}   # MindSpore numbers a process's cached compiles from 0


def graph_key(config) -> str:
    """Digest of what decides the compiled graphs apart from their argument and parameter shapes."""
    values = config.to_dict()
    for dotted in HOST_ONLY:
        *parents, last = dotted.split(".")
        node = values
        for part in parents:
            node = node.get(part, {})
        node.pop(last, None)
    from mindtune import cpu_kernels

    parts = {"config": values, "versions": _versions(), "source": _source_digest(),
             "cpu_kernels": cpu_kernels.library() if config.device == "cpu" else None,
             "model_files": _model_files_digest(config.model.path), "entry_script": _entry_script_digest()}
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:20]


@functools.lru_cache(maxsize=None)
def _versions() -> tuple:
    from importlib import metadata

    import mindspore

    found = {"mindspore": mindspore.__version__}
    for package in ("mindformers", "mindpet"):
        try:
            found[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            found[package] = None
    return tuple(sorted(found.items()))


@functools.lru_cache(maxsize=None)   # the package's files do not change while it runs
def _source_digest() -> str:
    """mindtune's own code (models, shims, losses, the CPU kernels): a change to any of it may change a graph."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    digest = hashlib.sha256()
    sources = glob.glob(os.path.join(root, "**", "*.py"), recursive=True)
    sources += glob.glob(os.path.join(root, "**", "*.cc"), recursive=True)
    for path in sorted(sources):
        digest.update(os.path.relpath(path, root).encode())
        with open(path, "rb") as fh:
            digest.update(fh.read())
    return digest.hexdigest()


def _entry_script_digest() -> str:
    """MindSpore recompiles (and rewrites the cache) when the entry script's contents differ from the run that
    wrote it; keyed on them, runs through `mindtune` and `python -m mindtune.cli` keep apart and both load."""
    script = os.path.realpath(sys.argv[0])
    if not os.path.isfile(script):
        return ""
    with open(script, "rb") as fh:
        return hashlib.sha256(script.encode() + fh.read()).hexdigest()


def _model_files_digest(path) -> str:
    """The model directory's small text files (config.json: rope theta, norm epsilon are constants in the graph)."""
    digest = hashlib.sha256()
    if isinstance(path, str) and os.path.isdir(path):
        for name in sorted(os.listdir(path)):
            full = os.path.join(path, name)
            if name.endswith((".json", ".yaml", ".yml")) and os.path.getsize(full) < 1 << 20:
                digest.update(name.encode())
                with open(full, "rb") as fh:
                    digest.update(fh.read())
    return digest.hexdigest()


class CompileCache:
    """The compile cache of one run's graphs in `directory` (MindSpore adds rank_<n>/graph_cache)."""

    def __init__(self, directory: str, key: str, rank: int = 0):
        self.directory, self.key = directory, key
        self.graphs = os.path.join(directory, f"rank_{rank}", "graph_cache")
        self.manifest_path = os.path.join(directory, f"rank_{rank}", "mindtune_manifest.json")

    def signature(self, label: str, arguments: str, parameters, structure=()) -> str:
        """Digest of a graph: its name, `arguments` (argument_spec), its parameters' names and shapes, and
        `structure` (cell_structure: the classes it is built of; two programs with one config and one entry
        script can still build different cells, e.g. from their command-line arguments)."""
        spec = {"key": self.key, "graph": label, "args": arguments, "structure": list(structure),
                "parameters": sorted((p.name, tuple(p.shape), str(p.dtype), bool(p.requires_grad))
                                     for p in parameters)}
        return hashlib.sha256(json.dumps(spec, sort_keys=True, default=str).encode()).hexdigest()

    def holds(self, signature: str) -> bool:
        """Whether the next compile will load this graph from the cache."""
        return self._manifest().get(str(_process["count"]), {}).get("signature") == signature

    @contextlib.contextmanager
    def compiling(self, label: str, signature: str):
        """Around the first call of a graph: load it if the cache holds this graph at this index, else compile
        it and record it there."""
        import mindspore as ms

        os.makedirs(self.graphs, exist_ok=True)
        index = _process["count"]
        _process["count"] += 1
        with locked(os.path.join(os.path.dirname(self.graphs), ".lock")):
            manifest = self._manifest()
            if manifest.get(str(index), {}).get("signature") != signature:
                for stale in self._files(index):   # another graph holds this index: never let MindSpore load it
                    os.remove(stale)
            ms.set_context(enable_compile_cache=True, compile_cache_path=self.directory)
            try:
                yield
            finally:
                ms.set_context(enable_compile_cache=False)
            if self._files(index):
                manifest[str(index)] = {"graph": label, "signature": signature}
                with atomic_write(self.manifest_path) as f:
                    json.dump(manifest, f)

    def _files(self, index: int) -> list:
        # compile_cache_<index>.mindir; under msrun MindSpore prefixes the process's role: MS_WORKERcompile_cache_0
        return glob.glob(os.path.join(self.graphs, f"*compile_cache_{index}.mindir"))

    def _manifest(self) -> dict:
        try:
            with open(self.manifest_path) as fh:
                entries = json.load(fh)
        except (OSError, ValueError):
            return {}
        return {index: entry for index, entry in entries.items() if isinstance(entry, dict)}


def for_run(config, rank: int = 0, root: str = None):
    """The run's CompileCache, or None when train.compile_cache or train.graph_mode is off, when there is no entry
    script, or when this process already caches another run's graphs (MindSpore loads from one directory per
    process)."""
    if not (config.train.compile_cache and config.train.graph_mode):
        return None
    if not os.path.isfile(sys.argv[0]):   # MindSpore 2.9 hashes the entry script: `python -c` or a notebook fails
        return None
    key = graph_key(config)
    directory = os.path.join(root or default_cache_dir(), "graphs", key)
    if _process["directory"] is None:      # the first run of this process: bind, mark recently used, prune
        _process["directory"] = directory
        os.makedirs(directory, exist_ok=True)
        os.utime(directory)
        prune(os.path.dirname(directory))
    elif _process["directory"] != directory:
        print(f"mindtune: compile cache off for this run: this process already caches {_process['directory']}",
              file=sys.stderr)
        return None
    return CompileCache(directory, key, rank)


def prune(graphs_root: str, keep: int = KEEP_RUNS, idle_seconds: float = 3600.0):
    """Delete the least recently used key directories beyond `keep` (each new mindtune version or changed
    configuration makes one; a SmolLM2 run's graphs take about 10 MB a bucket), never one used in the last hour."""
    import shutil
    import time

    entries = []
    for name in os.listdir(graphs_root):
        path = os.path.join(graphs_root, name)
        if os.path.isdir(path):
            entries.append((os.path.getmtime(path), path))
    entries.sort(reverse=True)
    for used, path in entries[keep:]:
        if time.time() - used > idle_seconds:
            shutil.rmtree(path, ignore_errors=True)


def cell_structure(fn, cells) -> list:
    """The compiled function's name and every cell's path and class under `cells` (CompiledFunction's owners)."""
    out = [f"{getattr(fn, '__module__', '')}.{getattr(fn, '__qualname__', type(fn).__qualname__)}"]
    for cell in cells:
        out += [f"{name}:{type(c).__module__}.{type(c).__qualname__}" for name, c in cell.cells_and_names()]
    return out


def argument_spec(args) -> str:
    """The shapes and dtypes of a call's tensors (nested in tuples), other values by repr: what picks its graph."""
    def spec(value):
        if isinstance(value, (tuple, list)):
            return [spec(v) for v in value]
        shape = getattr(value, "shape", None)
        return [list(shape), str(value.dtype)] if shape is not None else repr(value)
    return json.dumps(spec(args))

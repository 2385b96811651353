"""What every stage does before and after training: check inputs, prepare the run directory, build the
adapted model, save the final model or adapter, print the summary."""
import dataclasses
import os
from dataclasses import dataclass

from mindtune.config import save_config
from mindtune.data.sampler import Sampler, make_sampler
from mindtune.device import resolve_profile, setup_context
from mindtune.engine import checkpoint as ckpt
from mindtune.errors import ConfigError, DataError
from mindtune.models.loading import ResolvedModel, build_causal_lm, resolve_model


@dataclass
class Run:
    config: object
    run_dir: str
    profile: object
    resolved: ResolvedModel
    world_size: int = 1
    rank: int = 0
    parallel_mode: str = "stand_alone"

    def sampler(self, data, batch_size: int = 0, seed: int = None, group_by_length: bool = None) -> Sampler:
        """The training-data sampler for this process over `data` (a set from mindtune.data.loading, or a row
        count). Data parallel: each rank reads its own micro-batch of the global batch. Semi-auto parallel
        (full_batch): every rank reads the whole global batch and the operators' strategies slice it."""
        cfg = self.config
        batch = batch_size or cfg.train.batch_size
        seed = cfg.seed if seed is None else seed
        grouped = cfg.data.group_by_length if group_by_length is None else group_by_length
        if self.parallel_mode == "data_parallel":
            return make_sampler(data, batch, seed, self.world_size, self.rank, grouped)
        if self.parallel_mode == "semi_auto_parallel":
            return make_sampler(data, batch * cfg.parallel.data_parallel, seed, group_by_length=grouped)
        return make_sampler(data, batch, seed, group_by_length=grouped)


def check_inputs(config, need_tokenizer: bool = True):
    """Everything that can be checked without building a model; raises before anything is written."""
    profile = resolve_profile(config.device, config.hardware, config.train.precision)
    resolved = resolve_model(config.model.path, config.model.spec, config.model.tokenizer, config.model.chat_template)
    if resolved.tokenizer is None and need_tokenizer:
        raise ConfigError(f"model.tokenizer: {config.model.path} has no tokenizer; set model.tokenizer")
    from mindtune.data.loading import eval_sources, train_sources
    if config.data.train is None:
        raise ConfigError("data.train is required")
    for source in train_sources(config) + eval_sources(config):
        if not os.path.isfile(source.path):
            raise DataError(f"{source.key}: data file not found: {source.path}")
    from mindtune import peft
    peft.check(config.peft)
    if config.data.packing and config.stage != "sft":
        raise ConfigError(f"data.packing: packs SFT rows; stage {config.stage!r} does not pack, set it to false")
    if config.data.packing and config.peft.method in ("prompt", "ptuning"):
        raise ConfigError(f"data.packing: peft.method={config.peft.method} puts its virtual tokens in front of each "
                          "sequence, not of each packed row; set data.packing to false")
    if config.device == "cpu" and config.parallel.device_num > 1 and config.parallel.model_parallel * \
            config.parallel.pipeline_stage * config.parallel.context_parallel > 1:
        raise ConfigError("parallel: tensor/pipeline/context parallelism needs Ascend (semi-auto parallel does "
                          "not compile on CPU); on CPU only data_parallel runs, under msrun")
    verify_weights(resolved)
    max_positions = resolved.spec.max_position
    if config.data.max_length > max_positions:
        raise ConfigError(f"data.max_length: {config.data.max_length} is more than the model's {max_positions} "
                          "positions")
    if resolved.model_dir is not None and resolved.model_dir.is_adapter:
        saved = resolved.model_dir.meta.get("peft", {}).get("method")
        if saved != config.peft.method:
            raise ConfigError(f"peft.method: {config.peft.method!r} but {config.model.path} is a {saved!r} adapter")
    return profile, resolved


def verify_weights(resolved):
    """The weights files a model reference needs (an adapter's and its base model's), headers only."""
    from mindtune.models.spec import PRESETS

    if resolved.model_dir is None:
        return
    resolved.model_dir.verify()
    base = resolved.model_dir.meta.get("base_model") if resolved.model_dir.is_adapter else None
    if base and base not in PRESETS and os.path.isdir(base):
        resolve_model(base).model_dir.verify()


def prepare_run(config, checked=None) -> Run:
    """Create the run directory, save the resolved config, set up MindSpore. Call after every input check
    (`checked` = the result of check_inputs) so that bad input never leaves a half-made run behind."""
    profile, resolved = checked or check_inputs(config)
    run_dir = os.path.abspath(config.output_dir)
    if os.path.isdir(run_dir) and os.listdir(run_dir):
        if config.train.resume == "never":
            raise ConfigError(f"output_dir: {config.output_dir} is not empty and train.resume is never; "
                              "choose another output_dir or set train.resume=auto")
    if config.train.resume == "auto":
        found = ckpt.latest_checkpoint(run_dir)
        if found:  # a broken checkpoint, or one a different run made, is refused before anything is written
            ckpt.verify_checkpoint(found[1])
            from mindtune.engine.trainer import check_fingerprint
            saved = ckpt.load_checkpoint(found[1])[1].get("fingerprint", {})
            check_fingerprint(saved, run_fingerprint(config), found[1], config.train.resume_changed)
    world_size, rank = _distributed()
    if world_size == 1 and config.parallel.device_num > 1:
        raise ConfigError(f"parallel: the plan needs {config.parallel.device_num} devices but this process runs "
                          f"alone; launch it with scripts/msrun_launcher.sh --workers {config.parallel.device_num}")
    os.makedirs(run_dir, exist_ok=True)
    if rank == 0:
        save_config(config, os.path.join(run_dir, "config.yaml"))
    setup_context(profile, config.train.graph_mode, config.seed)
    mode = "stand_alone"
    if world_size > 1:  # under msrun: the MindSpore auto-parallel context for the planned strategy
        from mindtune.parallel.context import apply_parallel_context
        mode = apply_parallel_context(config.parallel, world_size)["parallel_mode"]
    return Run(config, run_dir, profile, resolved, world_size, rank, mode)


def _distributed():
    """(world size, rank) under msrun; (1, 0) otherwise."""
    world = int(os.environ.get("MS_WORKER_NUM", os.environ.get("RANK_SIZE", "1")))
    if world <= 1:
        return 1, 0
    from mindtune.parallel.context import init_distributed
    return init_distributed()


def build_adapted(run: Run, extra_seq: int = 0):
    """The base CausalLM with the configured PEFT method applied (and a saved adapter loaded, if any)."""
    from mindtune import peft

    cfg = run.config
    seq_length = cfg.data.max_length + peft.extra_positions(cfg.peft) + extra_seq
    if run.rank == 0:
        print(f"{cfg.stage}: building the {run.resolved.spec.num_layers}-layer model and loading its weights from "
              f"{run.resolved.source}", flush=True)
    lm = build_causal_lm(run.resolved, run.profile, seq_length, cfg.seed, cfg.train.batch_size, cfg.parallel)
    saved = run.resolved.model_dir.weights() if run.resolved.model_dir is not None and \
        run.resolved.model_dir.is_adapter else None
    adapted = peft.apply_peft(lm, cfg.peft, run.resolved.spec, tokenizer=run.resolved.tokenizer, seed=cfg.seed,
                              saved=saved, where=run.resolved.source)
    return lm, adapted


def save_final(run: Run, adapted, extra_weights: dict = None, meta: dict = None):
    """RUN_DIR/model: a full model directory, or an adapter directory for PEFT methods."""
    from mindtune import peft
    from mindtune.models.build import get_weights
    from mindtune.models.model_dir import write_model_dir

    cfg, resolved = run.config, run.resolved
    meta = dict(meta or {}, stage=cfg.stage)
    path = os.path.join(run.run_dir, "model")
    if adapted.adapter_names is None:
        weights = get_weights(adapted.network)
        weights.update(extra_weights or {})
        return write_model_dir(path, resolved.spec, weights, meta, tokenizer=resolved.tokenizer)
    weights = peft.adapter_weights(adapted)   # folded where the method trains a reparameterisation
    weights.update(extra_weights or {})
    base = resolved.model_dir.meta["base_model"] if resolved.model_dir and resolved.model_dir.is_adapter \
        else resolved.source
    meta.update(base_model=base, base_seed=cfg.seed, peft=dataclasses.asdict(cfg.peft))
    return write_model_dir(path, resolved.spec, weights, meta, tokenizer=resolved.tokenizer, adapter=True)


def mixture_log_row(config, sampler: Sampler, data):
    """TrainTask.log_row for a mixture: each logged row gets rows_<source> = rows of that source the whole
    world has drawn so far (packs_<source> when data.packing draws packs); None (the engine's own cadence) for
    one source."""
    names = getattr(data, "names", [])
    unit = getattr(data, "unit", "rows")
    if len(names) < 2:
        return None
    cfg = config.train

    def log_row(step: int, row: dict):
        done = step + 1
        if done % cfg.log_every and done != cfg.max_steps and not any(k.startswith("eval_") for k in row):
            return None
        seen = sampler.seen(done * cfg.grad_accum)
        return {**row, **{f"{unit}_{name}": int(n) for name, n in zip(names, seen)}}
    return log_row


# What decides a run's maths, beside the stage's own section and the data files' contents: a resume whose values
# differ is refused (train.resume_changed allows it). Logging, saving and max_steps may change between sessions.
FINGERPRINT_KEYS = ("stage", "seed", "model.path", "model.spec", "model.tokenizer", "model.chat_template",
                    "data.max_length", "data.truncation", "data.train_on_prompt", "data.columns",
                    "data.skip_bad_rows", "data.group_by_length", "train.batch_size",
                    "train.grad_accum", "train.lr", "train.schedule", "train.warmup_steps", "train.min_lr_ratio",
                    "train.weight_decay", "train.adam_beta1", "train.adam_beta2", "train.adam_eps",
                    "train.max_grad_norm", "train.precision", "peft", "parallel.data_parallel")


# how long a run goes and how often it reports: may change when a run is continued
RUN_LENGTH_KEYS = {f"{stage}.{key}" for stage in ("ppo", "grpo") for key in ("iterations", "eval_every",
                                                                              "eval_prompts")}


def run_fingerprint(config) -> dict:
    """{dotted key: value} of what decides the run's maths, with a digest of each data file's contents."""
    import hashlib

    values = config.to_dict()

    def get(dotted):
        node = values
        for part in dotted.split("."):
            node = node[part]
        return node

    found = {}

    def put(key, value):  # sections and dict values as dotted leaves, so a refusal names e.g. peft.rank
        if isinstance(value, dict) and value:
            for k, v in value.items():
                put(f"{key}.{k}", v)
        elif key not in RUN_LENGTH_KEYS:
            found[key] = value

    for key in FINGERPRINT_KEYS:
        put(key, get(key))
    if config.data.packing:   # recorded only when on, so checkpoints from before the key existed still resume
        put("data.packing", True)
    if config.stage in values and config.stage not in ("sft",):
        put(config.stage, values[config.stage])
    from mindtune.data.cache import file_digest
    from mindtune.data.loading import eval_sources, train_sources
    for key, sources in (("train", train_sources(config)), ("eval", eval_sources(config))):
        if len(sources) == 1 and os.path.isfile(sources[0].path):
            found[f"data.{key} contents"] = file_digest(sources[0].path)[:16]
        elif sources:   # a mixture: every file's contents, weight and columns
            parts = [f"{file_digest(s.path) if os.path.isfile(s.path) else None}:{s.weight}:{sorted(s.columns.items())}"
                     for s in sources]
            found[f"data.{key} contents"] = hashlib.sha256("|".join(parts).encode()).hexdigest()[:16]
    return found


def print_summary(run: Run, summary: dict, extra: str = ""):
    last = summary.get("last", {})
    lines = [f"run directory: {run.run_dir}",
             f"loss: {summary.get('first_loss'):.4f} (first step) -> {last.get('loss', float('nan')):.4f} "
             f"(step {summary['steps']})" if summary.get("first_loss") is not None else "loss: n/a"]
    if "eval_loss" in last:
        lines.append(f"eval loss: {last['eval_loss']:.4f}")
    if summary.get("tokens_per_s"):
        lines.append(f"throughput: {summary['tokens_per_s']:.0f} tokens/s (steps that compiled a graph not counted)")
    if summary.get("resumed_from"):
        lines.append(f"resumed from step {summary['resumed_from']}")
    if summary.get("skipped_steps"):
        lines.append(f"skipped steps (overflow): {summary['skipped_steps']}")
    lines.append(f"final model: {os.path.join(run.run_dir, 'model')}")
    if extra:
        lines.append(extra)
    if run.rank == 0:
        print("\n".join(lines), flush=True)

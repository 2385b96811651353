"""mindtune validate CONFIG.yaml [dotted.key=value ...]: check a config without training."""
from mindtune.config import load_config
from mindtune.data.formats import read_rows
from mindtune.errors import ConfigError


def register(sub):
    p = sub.add_parser("validate", help="check a config (schema, paths, data, parallel rules) without training")
    p.add_argument("config")
    p.add_argument("overrides", nargs="*", default=[], metavar="key=value")
    p.set_defaults(func=run)


def run(args) -> int:
    import importlib

    from mindtune.device import ascend_host_problem, without_host_check
    from mindtune.stages import STAGES
    from mindtune.stages.common import check_inputs

    config = load_config(args.config, args.overrides)
    if config.stage not in STAGES:  # the same refusal as `mindtune train`
        raise ConfigError(f"stage: {config.stage!r} is not implemented yet; available: {', '.join(STAGES)}")
    stage = importlib.import_module(STAGES[config.stage])
    with without_host_check():  # a cluster's config may be validated on any machine
        if hasattr(stage, "check"):    # a stage with inputs of its own (ppo: actor, reward model, prompts)
            config, (profile, resolved) = stage.check(config)[:2]
        else:
            profile, resolved = check_inputs(config, need_tokenizer=False)
    _check_data(config)
    problems = _parallel_problems(config)
    if problems:
        raise ConfigError("; ".join(problems))
    if config.device == "ascend" and ascend_host_problem():
        print(f"note: device ascend: {ascend_host_problem()}; `mindtune train` refuses to start on this host")
    if resolved.tokenizer is None:
        print(f"note: {config.model.path} has no tokenizer; training needs model.tokenizer or a converted model")
    print(f"{args.config}: ok (stage {config.stage}, model {resolved.source}, "
          f"{resolved.spec.num_parameters() / 1e6:.1f}M parameters, device {profile.name}, "
          f"{config.parallel.device_num} device(s))")
    return 0


def _check_data(config):
    """JSON syntax of every data file, and the row format of the stage (its `check_rows`), with file:line."""
    import importlib

    from mindtune.stages import STAGES

    from mindtune.data.loading import eval_sources, train_sources

    if config.data.skip_bad_rows:
        print("note: data.skip_bad_rows is true: rows are not checked here; `mindtune prepare` counts and reports "
              "the bad ones")
        return
    module = importlib.import_module(STAGES[config.stage])
    for source in train_sources(config) + eval_sources(config):
        rows = read_rows(source.path, source.key, source.columns)
        if hasattr(module, "check_rows"):
            module.check_rows(rows)


def _parallel_problems(config) -> list:
    try:
        from mindtune.parallel import check_config
    except ImportError:
        return []
    return check_config(config)

"""mindtune prepare CONFIG.yaml [dotted.key=value ...]: tokenize the config's data into the cache now."""
from mindtune.config import load_config


def register(sub):
    p = sub.add_parser("prepare", help="render and tokenize data.train / data.eval into the cache (data.cache_dir) "
                                       "so that training starts without tokenizing")
    p.add_argument("config", help="experiment yaml file")
    p.add_argument("overrides", nargs="*", default=[], metavar="key=value",
                   help="dotted overrides, e.g. data.num_workers=4")
    p.set_defaults(func=run)


def run(args) -> int:
    import importlib
    import time

    from mindtune.data.loading import stage_sets
    from mindtune.errors import ConfigError
    from mindtune.stages import STAGES
    from mindtune.stages.common import check_inputs

    began = time.perf_counter()
    config = load_config(args.config, args.overrides)
    if config.stage not in STAGES:
        raise ConfigError(f"stage: {config.stage!r} is not implemented yet; available: {', '.join(STAGES)}")
    stage = importlib.import_module(STAGES[config.stage])
    if config.stage in ("ppo", "grpo"):      # their checks read the prompts through the cache
        stage.check(config)
    else:
        config, checked = stage.check(config)[:2] if hasattr(stage, "check") else (config, check_inputs(config))
        stage_sets(config, checked[1].tokenizer, checked[1].spec.pad_token_id)
    print(f"{args.config}: data prepared for stage {config.stage} in {time.perf_counter() - began:.1f} s")
    return 0

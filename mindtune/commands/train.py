"""mindtune train CONFIG.yaml [dotted.key=value ...]"""
from mindtune.config import load_config


def register(sub):
    p = sub.add_parser("train", help="run the stage a yaml experiment names (sft, rm, ppo, ...)")
    p.add_argument("config", help="experiment yaml file")
    # default=[] keeps argparse from listing the optional overrides as required when the config is missing
    p.add_argument("overrides", nargs="*", default=[], metavar="key=value",
                   help="dotted overrides, e.g. train.max_steps=200")
    p.set_defaults(func=run)


def run(args) -> int:
    from mindtune.stages import run_stage

    config = load_config(args.config, args.overrides)
    run_stage(config)
    return 0

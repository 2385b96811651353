"""`mindtune <command>`: parse arguments, call one function, turn user errors into one line and exit code 2."""
import argparse
import importlib
import sys

from mindtune import shims

# Each module under mindtune.commands exposes register(subparsers) and run(args) -> int.
COMMANDS = ["train", "prepare", "validate", "demo", "plan", "convert", "generate", "merge_lora", "score", "report", "eval"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mindtune", description="Fine-tuning and RLHF on MindSpore/MindFormers")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name in COMMANDS:
        try:
            module = importlib.import_module(f"mindtune.commands.{name}")
        except ModuleNotFoundError as exc:
            if exc.name == f"mindtune.commands.{name}":
                continue  # a command still being built
            raise
        module.register(sub)
    return parser


def main(argv=None) -> int:
    shims.quiet_environment()  # before anything imports mindspore
    from mindtune.errors import MindtuneError

    args = build_parser().parse_args(argv)
    try:
        return args.func(args) or 0
    except MindtuneError as exc:
        print(f"mindtune {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"mindtune {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())

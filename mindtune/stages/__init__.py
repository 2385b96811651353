"""Stages: one short recipe each (sft, rm, ppo, ...). `run_stage(config)` dispatches on `config.stage`."""
import importlib

from mindtune.errors import ConfigError

STAGES = {"sft": "mindtune.stages.sft", "rm": "mindtune.stages.rm", "dpo": "mindtune.stages.dpo",
          "ppo": "mindtune.stages.ppo", "grpo": "mindtune.stages.grpo"}


def run_stage(config) -> dict:
    if config.stage not in STAGES:
        raise ConfigError(f"stage: {config.stage!r} is not implemented yet; available: {', '.join(STAGES)}")
    return importlib.import_module(STAGES[config.stage]).run(config)

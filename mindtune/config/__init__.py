"""Experiment configs: `load_config(path, overrides)` returns a checked `ExperimentConfig`."""
import os

import yaml

from mindtune.atomic import atomic_write
from mindtune.config.loader import apply_overrides, load_layers
from mindtune.config.schema import ExperimentConfig, build
from mindtune.errors import ConfigError


def load_config(path=None, overrides=(), defaults: dict = None) -> ExperimentConfig:
    """Load a yaml experiment (with `base:` files), apply dotted overrides, validate every key.

    Relative paths under data.* and model.* are resolved against the current directory, as a user typing
    them on the command line expects; `base:` paths are relative to the file that names them.
    """
    sources = {}
    data = dict(defaults or {})
    if path is not None:
        data.update(load_layers(path, sources))
    data = apply_overrides(data, overrides, sources)
    return build(ExperimentConfig, data, sources)


def save_config(config: ExperimentConfig, path: str):
    """Write the resolved config (every key, defaults included) as yaml."""
    with atomic_write(path) as f:
        yaml.safe_dump(config.to_dict(), f, sort_keys=False)


def require_file(key: str, path, what: str = "file"):
    """A config key that names a file: the error names the key and the path."""
    if path is None:
        raise ConfigError(f"{key} is required")
    if not os.path.exists(path):
        raise ConfigError(f"{key}: {what} not found: {path}")
    return path

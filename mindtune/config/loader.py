"""Read yaml experiment files: `base:` inheritance, dotted key=value overrides, and where each key came from."""
import os

import yaml

from mindtune.errors import ConfigError


def read_yaml(path: str) -> dict:
    if not os.path.isfile(path):
        raise ConfigError(f"config file not found: {path}")
    try:
        with open(path, encoding="utf-8") as f:
            data = yaml.safe_load(f)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark else path
        raise ConfigError(f"{where}: invalid yaml: {getattr(exc, 'problem', exc)}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of keys, got {type(data).__name__}")
    return data


def _merge(base: dict, update: dict, sources: dict, origin: str, prefix: str = "") -> dict:
    """Deep-merge `update` into a copy of `base`, recording the origin of every leaf key."""
    out = dict(base)
    for key, value in update.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value, sources, origin, dotted + ".")
        else:
            out[key] = value
            _record(sources, dotted, value, origin)
    return out


def _record(sources: dict, dotted: str, value, origin: str):
    if isinstance(value, dict):
        for key, sub in value.items():
            _record(sources, f"{dotted}.{key}", sub, origin)
    else:
        sources[dotted] = origin


def load_layers(path: str, sources: dict, _chain=()) -> dict:
    """Load `path`, resolving `base:` (a path relative to the file, or a list of them) depth first."""
    path = os.path.abspath(path)
    if path in _chain:
        raise ConfigError(f"{path}: `base:` inheritance loops back to itself")
    data = read_yaml(path)
    bases = data.pop("base", None)
    merged = {}
    if bases is not None:
        if isinstance(bases, str):
            bases = [bases]
        if not isinstance(bases, list) or not all(isinstance(b, str) for b in bases):
            raise ConfigError(f"{path}: `base:` must be a file path or a list of file paths")
        for base in bases:
            base_path = os.path.join(os.path.dirname(path), base)
            if not os.path.isfile(base_path):
                raise ConfigError(f"{path}: base file not found: {base}")
            merged = _merge(merged, load_layers(base_path, sources, _chain + (path,)), {}, "")
    return _merge(merged, data, sources, path)


def parse_override(text: str):
    """`a.b.c=value` -> (['a','b','c'], typed value). Values are parsed as yaml scalars or lists."""
    if "=" not in text:
        raise ConfigError(f"override {text!r} is not of the form dotted.key=value")
    key, raw = text.split("=", 1)
    if not key or any(not part for part in key.split(".")):
        raise ConfigError(f"override {text!r} has an empty key")
    try:
        value = yaml.safe_load(raw) if raw != "" else ""
    except yaml.YAMLError:
        value = raw
    return key.split("."), value


def apply_overrides(data: dict, overrides, sources: dict) -> dict:
    for text in overrides:
        keys, value = parse_override(text)
        nested = value
        for key in reversed(keys):
            nested = {key: nested}
        data = _merge(data, nested, sources, "command line")
    return data

"""User-facing errors: the CLI prints these as one line and exits non-zero, never a traceback."""


class MindtuneError(Exception):
    """Bad input from the user (config, data file, checkpoint, argument). The message names the culprit."""


class ConfigError(MindtuneError):
    """A config key is unknown, mistyped, out of range, or points at a missing file."""


class DataError(MindtuneError):
    """A data file is missing or a row is malformed; the message carries file:line."""


class CheckpointError(MindtuneError):
    """A model directory or checkpoint is missing, incomplete or does not fit the model."""

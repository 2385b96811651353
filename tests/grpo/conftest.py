"""Make tests/ importable (its conftest helpers) and quiet MindSpore before it is imported."""
from mindtune import shims

shims.quiet_environment()

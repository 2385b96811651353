"""Make tests/reference (the numpy Llama and tiny-model helpers) importable as `reference`."""
import os
import sys

from mindtune import shims

shims.quiet_environment()  # before anything imports mindspore
_TESTS = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if _TESTS not in sys.path:
    sys.path.insert(0, _TESTS)

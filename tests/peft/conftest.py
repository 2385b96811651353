"""Shared pieces for the PEFT tests: tiny Llama builders and a few-step training harness on the real engine."""
import os
import sys

from mindtune import shims

shims.quiet_environment()  # before anything imports mindspore
_TESTS = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if _TESTS not in sys.path:
    sys.path.insert(0, _TESTS)

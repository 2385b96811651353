"""Make tests/rm (the data generator) and tests/reference importable."""
import os
import sys

from mindtune import shims

shims.quiet_environment()  # before anything imports mindspore (tests/conftest.py does it too)
_HERE = os.path.dirname(os.path.abspath(__file__))
for path in (_HERE, os.path.dirname(_HERE)):
    if path not in sys.path:
        sys.path.insert(0, path)

"""Make tests/reference importable as `reference`; tiny model directories with lively random weights."""
import os
import sys

import pytest

from mindtune import shims

shims.quiet_environment()  # before anything imports mindspore
_TESTS = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if _TESTS not in sys.path:
    sys.path.insert(0, _TESTS)


@pytest.fixture(scope="module")
def tiny_models(tmp_path_factory):
    """{seed: (model directory, spec, weights)} for two tiny models that differ only in their weights."""
    from reference.tiny import lively_weights

    from mindtune.models.loading import TINY_TOKENIZER
    from mindtune.models.model_dir import write_model_dir
    from mindtune.models.spec import get_preset

    spec, out = get_preset("tiny"), {}
    root = tmp_path_factory.mktemp("models")
    for seed in (0, 1):
        weights = lively_weights(spec, seed)
        path = str(root / f"m{seed}")
        write_model_dir(path, spec, weights, {}, tokenizer_dir=TINY_TOKENIZER)
        out[seed] = (path, spec, weights)
    return out

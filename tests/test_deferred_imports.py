"""mindtune.shims.defer_unused_imports: `import mindformers` no longer imports HuggingFace datasets or nltk, and
the names it takes from them still work when called, as do the modules themselves when something uses them."""
import json
import subprocess
import sys

CHECK = r"""
import importlib.util, json, sys
from mindtune import shims
shims.quiet_environment()
import mindformers  # noqa: F401
from mindformers.core.metric import metric
from mindformers.dataset.dataloader import hf_dataloader
out = {"loaded_at_import": sorted(m for m in ("datasets.arrow_dataset", "nltk", "scipy.stats", "pandas", "aiohttp")
                                  if m in sys.modules),
       "datasets_spec": importlib.util.find_spec("datasets").name}
# what mindformers' ADGEN metric calls, through the names it imported
out["bleu"] = float(metric.sentence_bleu([list("the cat sat")], list("the cat sat"),
                                   smoothing_function=metric.SmoothingFunction().method3))
out["nltk_after_call"] = "nltk" in sys.modules
out["smoothing_is_real"] = type(metric.SmoothingFunction()).__module__
import datasets
out["dataset_rows"] = datasets.Dataset.from_dict({"a": [1, 2, 3]}).num_rows
out["datasets_real"] = type(sys.modules["datasets"]).__name__
out["split"] = list(hf_dataloader.split_dataset_by_node(datasets.Dataset.from_dict({"a": [1, 2, 3, 4]}),
                                                   rank=1, world_size=2)["a"])
from mindtune.eval.metrics import bleu
out["mindtune_bleu"] = float(bleu("the cat sat on the mat", "the cat sat on the mat"))
print(json.dumps(out))
"""


def test_mindformers_imports_without_datasets_or_nltk_and_their_names_still_work():
    proc = subprocess.run([sys.executable, "-c", CHECK], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["loaded_at_import"] == []
    assert out["datasets_spec"] == "datasets"
    assert out["bleu"] == 1.0 and out["nltk_after_call"] is True
    assert out["smoothing_is_real"] == "nltk.translate.bleu_score"
    assert out["dataset_rows"] == 3 and out["datasets_real"] == "module"
    assert out["split"] == [3, 4]
    assert out["mindtune_bleu"] == 1.0

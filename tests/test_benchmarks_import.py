"""Every benchmark script still imports: they run outside the suite, so an API change could break them unseen."""

import importlib
import pkgutil
from pathlib import Path

import pytest

import benchmarks

MODULES = sorted(
    f"benchmarks.{m.name}"
    for m in pkgutil.iter_modules([str(Path(benchmarks.__file__).parent)])
    if not m.name.startswith("_")
) + [f"benchmarks.nms_study.{m}" for m in ("ops", "detectors", "measure", "report", "study", "train")]


@pytest.mark.parametrize("name", MODULES)
def test_benchmark_module_imports(name):
    module = importlib.import_module(name)
    assert module.__doc__, f"{name} has no docstring saying what it measures"


def test_train_synthetic_steps_span_epochs(tmp_path):
    """``--steps N`` beyond one pass over the data must not be cut to one epoch's length."""
    import json

    from benchmarks.train_synthetic import _steps_per_epoch

    (tmp_path / "annotations").mkdir()
    images = [{"id": i, "file_name": f"{i}.png", "width": 8, "height": 8} for i in range(2001)]
    (tmp_path / "annotations" / "instances_train.json").write_text(json.dumps({"images": images}))
    assert _steps_per_epoch(tmp_path, [], "scratch") == 500  # batch 4, the short last batch dropped
    assert _steps_per_epoch(tmp_path, ["lr=1e-3", "batch_size=8"], "scratch") == 250

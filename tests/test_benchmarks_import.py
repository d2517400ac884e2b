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

"""The scripts under examples/ are run here on tiny generated data, so they cannot rot."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import pytest
import torch

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def load_example(name: str) -> ModuleType:
    """Import ``examples/<name>.py`` as a module (the folder is scripts, not a package)."""
    spec = importlib.util.spec_from_file_location(f"rtdetr_example_{name}", EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(autouse=True)
def _one_thread():
    # The examples are timed in seconds on a shared 2-core machine: one torch thread each.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="package")
def toy_yolo(tmp_path_factory) -> Path:
    """The fine-tuning example's tiny YOLO dataset (8 train / 4 val images, 128 px); its data.yaml."""
    return load_example("finetune_yolo").write_toy_yolo_dataset(tmp_path_factory.mktemp("toy_yolo"))

"""Fixtures of the export tests: a tiny jittered detector, its ONNX export, calibration images.

Freshly initialized heads tie many scores exactly and put every reference box on
an anchor (a rounding boundary of the discrete sampler), so the fixture models
get a small random perturbation of the decoder: generic weights, still seeded.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import rtdetr

pytest.importorskip("onnx", reason="onnx is not installed (pip install 'rtdetr[export]')")
pytest.importorskip("onnxruntime", reason="onnxruntime is not installed (pip install 'rtdetr[export]')")

TINY = "rtdetrv2_hgnetv2_n"
IMGSZ = 256
CLASS_NAMES = ["circle", "square", "triangle", "star", "ring", "cross"]


@pytest.fixture(autouse=True)
def _one_torch_thread():
    # Two OpenMP threads on a 2-core machine shared with other jobs can run eager
    # inference 20x slower than one; the tests compare numbers, not speed.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def jittered_model(name: str = TINY, *, seed: int = 0, scale: float = 0.05, **overrides) -> rtdetr.RTDETR:
    """A seeded model in eval mode with the decoder perturbed (generic, tie-free scores)."""
    torch.manual_seed(seed)
    model = rtdetr.build_model(name, num_classes=len(CLASS_NAMES), **overrides).eval()
    with torch.no_grad():
        for p in model.decoder.parameters():
            p.add_(scale * torch.randn_like(p))
    model.class_names = list(CLASS_NAMES)
    return model


@pytest.fixture(scope="session")
def tiny_model() -> rtdetr.RTDETR:
    return jittered_model()


@pytest.fixture(scope="session")
def tiny_onnx(tiny_model, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny model exported at 256 px with a dynamic batch."""
    from rtdetr.export import export_onnx

    return export_onnx(tiny_model, tmp_path_factory.mktemp("onnx") / "tiny.onnx", imgsz=IMGSZ, dynamic_batch=True)


@pytest.fixture(scope="session")
def calib_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A handful of synthetic shape images (train/ holds 8)."""
    from rtdetr.data.synthetic import generate_synthetic_dataset

    out = tmp_path_factory.mktemp("calib")
    generate_synthetic_dataset(out, num_train=8, num_val=1, imgsz=IMGSZ, seed=5)
    return out / "train"


def run_cli(argv: list[str]) -> tuple[int, str]:
    """``rtdetr export ARGV`` through the command's own parser; returns (exit code, stdout)."""
    import argparse
    import contextlib
    import io

    from rtdetr.export.command import add_export_parser

    parser = argparse.ArgumentParser(prog="rtdetr")
    add_export_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["export", *argv])
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = args.func(args)
    return code, out.getvalue()


@pytest.fixture(scope="session")
def cli_int8(calib_dir, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, str]:
    """``rtdetr export --int8`` of the tiny preset: (fp32 path, int8 path, printed report)."""
    out = tmp_path_factory.mktemp("cli_int8") / "tiny_int8.onnx"
    code, text = run_cli(
        [
            "--model",
            TINY,
            "--num-classes",
            "6",
            "--imgsz",
            str(IMGSZ),
            "--int8",
            "--calib",
            str(calib_dir),
            "--calib-images",
            "8",
            "--out",
            str(out),
            "--threads",
            "1",
        ]
    )
    assert code == 0, text
    return out.with_name("tiny_fp32.onnx"), out, text

"""Shared test helpers: where the reference fixtures live and how to load fill.py."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

# MKL's conditional numerical reproducibility: its AVX2 code path on every CPU. The float64
# fixtures were recorded where MKL ran that path (AMD CPUs always get it); on Intel CPUs
# with AVX-512 MKL sums in another order, and the decoder's inverse sigmoid amplifies the
# ~1e-16 differences to ~4e-8 in the logits, past the fixtures' 1e-8. Set before torch
# loads MKL; users' runs are unaffected.
os.environ.setdefault("MKL_CBWR", "AVX2")

# Under pytest-xdist (``-n N``) the workers share the cores: one torch thread each (and in
# the processes they start) instead of every worker starting a thread per core.
_WORKERS = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
if _WORKERS > 1:
    # The CPUs this process may use (a container's affinity mask), not the host's count;
    # inline because torch must not be imported before OMP_NUM_THREADS is set.
    _cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    os.environ["OMP_NUM_THREADS"] = str(max(1, _cpus // _WORKERS))

import pytest  # noqa: E402
import torch  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
REFERENCE_DIR = Path(os.environ.get("RTDETR_REFERENCE_DIR", REPO.parent / "shared" / "reference"))


def reference_file(name: str) -> Path:
    """Path of a reference fixture; skips the test (with the path) when it is absent."""
    path = REFERENCE_DIR / name
    if not path.exists():
        pytest.skip(f"reference fixture not found: {path} (set RTDETR_REFERENCE_DIR)")
    return path


def load_fill():
    """The reference's weight-filling helper, imported from the fixture directory (not vendored)."""
    path = reference_file("fill.py")
    spec = importlib.util.spec_from_file_location("rtdetr_reference_fill", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(autouse=True)
def _flush_denormals():
    # Random small weights drive activations into denormals, which makes CPU math crawl.
    torch.set_flush_denormal(True)
    yield


def filled_double_model(name: str):
    """Preset ``name`` in float64 eval mode with the fixtures' name-keyed weights.

    Filling happens after ``.double()``: filling a float32 model first would round the weights.
    """
    import rtdetr

    model = rtdetr.build_model(name).double().eval()
    load_fill().fill_state_dict(model)
    return model


def assert_matches_forward_fixture(model, fixture: dict, tol: float = 1e-8, image: torch.Tensor | None = None):
    """Compare backbone / encoder features, outputs and postprocessed detections with a
    reference forward fixture; returns (input, outputs) for further checks.

    Feature maps are stored as ``f[:, ::c, ::4, ::4]`` with ``c`` the fixture's ``channel_step``
    (1 in the full reference set, larger in the slim copy under ``tests/data/``). ``image``:
    the input, when the reference helper that makes it is not at hand."""
    import rtdetr
    from rtdetr.data.coco_categories import COCO_CATEGORY_IDS
    from rtdetr.summary import forward_with_stages

    x = load_fill().reference_image(fixture.get("input_seed", 0)) if image is None else image
    step = fixture.get("channel_step", 1)
    with torch.no_grad():  # one forward; the stages' outputs are recorded on the way
        out, feats, enc = forward_with_stages(model, x)
    for ours, ref in zip(feats, fixture["backbone_feats"], strict=True):
        torch.testing.assert_close(ours[:, ::step, ::4, ::4], ref, atol=tol, rtol=0)
    for ours, ref in zip(enc, fixture["encoder_feats"], strict=True):
        torch.testing.assert_close(ours[:, ::step, ::4, ::4], ref, atol=tol, rtol=0)
    torch.testing.assert_close(out.pred_logits, fixture["pred_logits"], atol=tol, rtol=0)
    torch.testing.assert_close(out["pred_boxes"], fixture["pred_boxes"], atol=tol, rtol=0)
    # The reference's COCO postprocessor reports COCO category ids.
    post = rtdetr.build_postprocessor(model, category_ids=COCO_CATEGORY_IDS)
    (result,) = post(out, fixture["post_orig_target_sizes"])
    torch.testing.assert_close(result["scores"], fixture["post_scores"], atol=tol, rtol=0)
    torch.testing.assert_close(result["boxes"], fixture["post_boxes"], atol=tol, rtol=0)
    assert torch.equal(result["labels"], fixture["post_labels"])
    return x, out

"""Sharded ``rtdetr predict``: 2 gloo ranks equal one process; interrupted runs resume; the merge refuses gaps."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from rtdetr.infer.results import Detections
from rtdetr.infer.sharding import IncompleteShardsError, merge_parts, plan_shards, prepare_parts, run_shard
from rtdetr.infer.writer import PredictionWriter

SRC = Path(__file__).resolve().parents[2] / "src"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def tiny_setup(tmp_path_factory):
    """5 small images of different sizes and fixed random weights (every process loads the same)."""
    import rtdetr

    root = tmp_path_factory.mktemp("shard")
    torch.manual_seed(0)
    sd = rtdetr.build_model("rtdetrv2_hgnetv2_n", num_classes=3, num_queries=50).state_dict()
    torch.save({"ema": {"module": sd}}, root / "w.pth")
    (root / "src").mkdir()
    for i in range(5):
        pixels = (np.random.default_rng(i).random((60 + 3 * i, 70, 3)) * 255).astype(np.uint8)
        Image.fromarray(pixels).save(root / "src" / f"im{i}.png")
    return root


def _predict_args(root: Path, out: Path) -> list[str]:
    return [
        "predict",
        str(root / "src"),
        "--model",
        "rtdetrv2_hgnetv2_n",
        "--weights",
        str(root / "w.pth"),
        "--set",
        "num_queries=50",
        "--imgsz",
        "128",
        "--conf",
        "0",
        "--max-det",
        "5",
        "--device",
        "cpu",
        "--precision",
        "fp32",
        "--out",
        str(out),
    ]


def test_two_gloo_ranks_give_the_single_process_predictions(tiny_setup, tmp_path):
    from rtdetr.cli import main

    assert main(_predict_args(tiny_setup, tmp_path / "single")) == 0
    env = {**os.environ, "PYTHONPATH": str(SRC), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(_free_port())]
    cmd += ["-m", "rtdetr.cli", *_predict_args(tiny_setup, tmp_path / "sharded")]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "5 image(s)/frame(s), 25 detection(s) merged" in proc.stdout
    single = json.loads((tmp_path / "single" / "predictions.json").read_text())
    sharded = json.loads((tmp_path / "sharded" / "predictions.json").read_text())
    assert [p["image_id"] for p in sharded] == [p["image_id"] for p in single]
    assert [p["category_id"] for p in sharded] == [p["category_id"] for p in single]
    boxes_a = np.array([p["bbox"] + [p["score"]] for p in single])
    boxes_b = np.array([p["bbox"] + [p["score"]] for p in sharded])
    np.testing.assert_allclose(boxes_b, boxes_a, atol=1e-4, rtol=0)
    index_a = json.loads((tmp_path / "single" / "images.json").read_text())
    index_b = json.loads((tmp_path / "sharded" / "images.json").read_text())
    assert index_a == index_b
    # every rank wrote its annotated images under the names a single run gives them
    assert {p.name for p in (tmp_path / "sharded").glob("*.png")} == {f"im{i}.png" for i in range(5)}


class _Scripted:
    """A stand-in for ``Detector.predict(files, stream=True)``: one box per file, from its name; counts calls."""

    def __init__(self) -> None:
        self.seen: list[str] = []

    def __call__(self, files, on_error):
        for i, f in enumerate(files):
            self.seen.append(f)
            k = int(Path(f).stem[2:])
            if k == 7:  # one unreadable file: skipped, as the real stream does
                on_error(f, OSError("unreadable"))
                continue
            yield Detections(
                boxes=torch.tensor([[k, 2.0 * k, k + 10.5, 2.0 * k + 7.25]]),
                scores=torch.tensor([0.5 + k / 100]),
                labels=torch.tensor([k % 3]),
                image_size=(100, 80),
                class_names=["a", "b", "c"],
                source=f,
                index=i,
            )


def _files(n: int) -> list[str]:
    return [f"/data/im{k}.jpg" for k in range(n)]


def test_interrupted_run_resumes_and_the_merge_refuses_incomplete_parts(tmp_path):
    files = _files(11)
    settings = {"model": "m", "conf": 0.5}
    plans = [plan_shards(files, rank=r, world_size=2, settings=settings, chunk_size=3) for r in range(2)]
    assert plans[0].my_chunks() == [0, 2] and plans[1].my_chunks() == [1, 3]
    out = tmp_path / "out"
    assert prepare_parts(out, plans[0]) == 0
    # Rank 1 finishes; rank 0 "dies" while writing chunk 0 (only a temporary file is left).
    rank1 = _Scripted()
    run_shard(out, plans[1], rank1, save_images=False)
    (out / "parts" / "part-00000.json.123.tmp").write_text('{"complete": tr')
    with pytest.raises(IncompleteShardsError, match=r"2 of 4 chunk\(s\) have no finished part \(0, 2\)"):
        merge_parts(out, plans[0])
    assert not (out / "predictions.json").exists()
    # A part of another run (other settings) does not count either.
    other = plan_shards(files, rank=0, world_size=2, settings={"model": "m", "conf": 0.1}, chunk_size=3)
    run_shard(tmp_path / "other", other, _Scripted(), save_images=False)
    shutil.copy(tmp_path / "other" / "parts" / "part-00000.json", out / "parts" / "part-00000.json")
    with pytest.raises(IncompleteShardsError, match=r"\(0, 2\)"):
        merge_parts(out, plans[0])
    # The re-run: rank 1's chunks are skipped, rank 0 predicts only its own.
    assert prepare_parts(out, plans[0]) == 2
    rank0, rank1_again = _Scripted(), _Scripted()
    stats0 = run_shard(out, plans[0], rank0, save_images=False)
    stats1 = run_shard(out, plans[1], rank1_again, save_images=False)
    assert rank1_again.seen == [] and stats1.chunks_skipped == 2
    assert rank0.seen == files[0:3] + files[6:9] and stats0.chunks_done == 2
    merged = merge_parts(out, plans[0])
    assert merged.images == 10 and merged.skipped_files == ["/data/im7.jpg"]
    # Same files as one writer over the whole list would give.
    with PredictionWriter(tmp_path / "single", save_images=False) as writer:
        for det in _Scripted()(files, lambda path, error: None):
            writer.add(det)
    for name in ("predictions.json", "images.json"):
        assert json.loads((out / name).read_text()) == json.loads((tmp_path / "single" / name).read_text())


def test_changed_settings_start_over_and_chunks_do_not_depend_on_world_size(tmp_path):
    files = _files(7)
    out = tmp_path / "out"
    two = [plan_shards(files, rank=r, world_size=2, settings={"conf": 0.5}, chunk_size=2) for r in range(2)]
    prepare_parts(out, two[0])
    for plan in two:
        run_shard(out, plan, _Scripted(), save_images=False)
    # Three ranks now, same inputs: every chunk is already done.
    three = [plan_shards(files, rank=r, world_size=3, settings={"conf": 0.5}, chunk_size=2) for r in range(3)]
    assert prepare_parts(out, three[0]) == 4
    assert all(run_shard(out, p, _Scripted(), save_images=False).chunks_done == 0 for p in three)
    # Another conf: the old parts are removed and everything is predicted again.
    changed = plan_shards(files, rank=0, world_size=1, settings={"conf": 0.1}, chunk_size=2)
    assert prepare_parts(out, changed) == 0
    assert run_shard(out, changed, _Scripted(), save_images=False).chunks_done == 4


def test_plan_rejects_bad_rank():
    with pytest.raises(ValueError, match="rank 2"):
        plan_shards(_files(3), rank=2, world_size=2, settings={})


def test_writer_does_not_give_reserved_names(tmp_path):
    from rtdetr.infer.writer import PredictionWriter

    dets = list(_Scripted()(["/a/im1.png", "/b/im2.png"], on_error=None))
    for det in dets:
        det.image = torch.zeros(3, 80, 100, dtype=torch.uint8)  # something to draw on
    with PredictionWriter(tmp_path, reserved_names={"im1.png"}) as writer:
        for det in dets:
            writer.add(det)
    assert [p.name for p in writer.written] == ["1_im1.png", "im2.png"]

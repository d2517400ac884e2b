"""The README's main job, shrunk: synthetic data -> seconds of training -> evaluation -> pictures."""

from __future__ import annotations

from PIL import Image

from rtdetr.demo import run_demo


def test_demo_writes_metrics_checkpoints_and_annotated_images(tmp_path, capsys):
    out = tmp_path / "demo"
    rc = run_demo(
        out=out, minutes=0.05, imgsz=96, num_train=8, num_val=4, num_shown=2, device="cpu",
        model_overrides={"num_queries": 30},
    )  # fmt: skip
    assert rc == 0
    table = (out / "metrics.md").read_text()
    assert "AP50" in table and "circle" in table  # summary and per-class rows
    assert (out / "train" / "last.pt").exists() and (out / "train" / "metrics.jsonl").exists()
    pictures = sorted((out / "predictions").glob("*.png"))
    assert len(pictures) == 2
    with Image.open(pictures[0]) as im:
        assert im.size == (96, 96) and im.mode == "RGB"
    assert "run directory" in capsys.readouterr().out

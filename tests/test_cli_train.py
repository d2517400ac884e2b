"""The train / val / data CLI end to end on a tiny synthetic dataset (a few seconds of CPU)."""

from __future__ import annotations

import json

import pytest
import torch

from rtdetr.cli import main

SMALL = [
    "--model",
    "rtdetrv2_hgnetv2_n",
    "--imgsz",
    "96",
    "--batch-size",
    "4",
    "--workers",
    "0",
    "--warmup-iters",
    "2",
    "--ema-warmup",
    "2",
    "--set",
    "num_queries=30",
]


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    root = tmp_path_factory.mktemp("synth")
    assert main(["data", "synth", str(root / "six"), "--train", "8", "--val", "4", "--imgsz", "64"]) == 0
    assert (
        main(["data", "synth", str(root / "three"), "--train", "8", "--val", "4", "--imgsz", "64", "--classes", "3"])
        == 0
    )
    return root


def test_train_resume_val_and_finetune(synth, tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", "--data", str(synth / "six"), "--epochs", "1", "--out", str(run), *SMALL]) == 0
    ckpt = torch.load(run / "last.pt", weights_only=False)
    assert ckpt["epoch"] == 1 and ckpt["class_names"][:2] == ["circle", "square"]
    assert ckpt["config"]["num_classes"] == 6
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert records[-1]["epoch"] == 1 and 0.0 <= records[-1]["AP"] <= 1.0
    assert (run / "results.csv").exists()

    # resume continues from the saved epoch to the new total
    assert main(["train", "--data", str(synth / "six"), "--epochs", "2", "--out", str(run), "--resume", *SMALL]) == 0
    assert torch.load(run / "last.pt", weights_only=False)["epoch"] == 2

    capsys.readouterr()
    assert (
        main(
            [
                "val",
                "--model",
                str(run / "last.pt"),
                "--data",
                str(synth / "six"),
                "--imgsz",
                "96",
                "--workers",
                "0",
                "--save-json",
                str(tmp_path / "res.json"),
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "AP50" in out and "circle" in out
    assert isinstance(json.loads((tmp_path / "res.json").read_text()), list)

    # the checkpoint predicts at its training size, with its class names and dataset ids
    from rtdetr.infer import Detector

    detector = Detector.from_pretrained(run / "last.pt")
    assert detector.imgsz == 96 and detector.class_names[:2] == ["circle", "square"]
    (det,) = detector.predict(next((synth / "six" / "val").iterdir()), conf=0.0, max_det=3)
    assert len(det) == 3 and set(det.names) <= set(detector.class_names)
    assert {d["category_id"] for d in det.to_coco_json(0)} <= set(ckpt["category_ids"])

    # fine-tune the 6-class checkpoint on a 3-class dataset: heads are re-initialized
    ft = tmp_path / "ft"
    assert (
        main(
            [
                "train",
                "--data",
                str(synth / "three"),
                "--epochs",
                "1",
                "--out",
                str(ft),
                "--weights",
                str(run / "last.pt"),
                *SMALL,
            ]
        )
        == 0
    )
    tuned = torch.load(ft / "last.pt", weights_only=False)
    assert tuned["config"]["num_classes"] == 3
    assert tuned["model"]["decoder.enc_score_head.weight"].shape[0] == 3
    # the backbone came from the checkpoint (moved by one epoch of training only)
    before = ckpt["ema"]["module"]["backbone.stem.stem1.conv.weight"]
    after = tuned["model"]["backbone.stem.stem1.conv.weight"]
    assert torch.allclose(before, after, atol=0.05)


def test_train_reports_a_missing_dataset(tmp_path, capsys):
    assert main(["train", "--data", str(tmp_path / "nope"), "--epochs", "1", "--out", str(tmp_path / "r"), *SMALL]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and "nope" in err and "Traceback" not in err


def _awkward_coco(root) -> set[int]:
    """A COCO folder as real exports come: mixed sizes, colour modes and formats, images in a
    subfolder, sparse category ids (one unused), crowd regions, a negative image and a box
    hanging far over the edge. Returns the val image ids."""
    from PIL import Image, ImageDraw

    from .data.conftest import write_coco

    cats = [(7, "disc"), (23, "block"), (91, "bar"), (200, "x")]
    sizes, modes = [(96, 64), (50, 80), (64, 64), (120, 30)], ["RGB", "L", "RGBA", "P"]
    for split, n in (("train", 8), ("val", 4)):
        (root / split / "sub").mkdir(parents=True)
        images, anns = [], []
        for i in range(n):
            w, h = sizes[i % 4]
            image = Image.new("RGB", (w, h), (30 * i, 90, 160))
            draw = ImageDraw.Draw(image)
            for k, cid in enumerate((7, 23, 91)[: i % 4]):  # image 0 of each four: no objects
                x, y, bw, bh = 4 + 12 * k, 4 + 6 * k, 14, 12
                draw.rectangle([x, y, x + bw, y + bh], fill=(250, 40 * k, 10))
                anns.append({"image_id": 100 + i, "category_id": cid, "bbox": [x, y, bw, bh]})
            if i == 1:
                anns.append({"image_id": 101, "category_id": 7, "bbox": [2, 2, 9, 9], "iscrowd": 1})
                anns.append({"image_id": 101, "category_id": 23, "bbox": [w - 5, 3, 40, 10]})
            name = f"sub/{i}.png" if i % 2 else f"{i}.{'jpg' if modes[i % 4] in ('RGB', 'L') else 'png'}"
            image.convert(modes[i % 4]).save(root / split / name)
            images.append((100 + i, name, w, h))
        write_coco(root, images, anns, cats, split=split, create_files=False)
    return {image_id for image_id, *_ in images}  # the last split's: val


def test_the_issue_check_pair_on_an_awkward_coco_folder(tmp_path):
    """`rtdetr train --recipe scratch --max-time` then `rtdetr val --save-json`, as the
    convergence issue will check it, on data unlike ours: results carry the file's ids."""
    from rtdetr.train.checkpoint import load_checkpoint

    data, out = tmp_path / "data", tmp_path / "out"
    val_ids = _awkward_coco(data)
    train = ["train", "--model", "rtdetrv2_hgnetv2_n", "--data", str(data), "--imgsz", "64", "--recipe", "scratch"]
    assert main([*train, "--max-time", "6", "--out", str(out), "--set", "num_queries=20"]) == 0
    ckpt = load_checkpoint(out / "last.pt")  # the safe loader
    assert ckpt["category_ids"] == [7, 23, 91, 200]
    results = tmp_path / "R.json"
    assert (
        main(
            ["val", "--model", str(out / "last.pt"), "--data", str(data), "--imgsz", "64", "--save-json", str(results)]
        )
        == 0
    )
    dets = json.loads(results.read_text())
    assert dets and {d["category_id"] for d in dets} <= {7, 23, 91, 200}
    assert {d["image_id"] for d in dets} == val_ids
    assert all(len(d["bbox"]) == 4 and 0.0 <= d["score"] <= 1.0 for d in dets)

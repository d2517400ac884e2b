"""Video input and the `rtdetr predict` command."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

from rtdetr.cli import main

cv2 = pytest.importorskip("cv2", reason="video needs OpenCV: pip install 'rtdetr[video]'")


def _write_video(path, n=4, size=(96, 64)):
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10.0, size)
    assert writer.isOpened()
    for i in range(n):
        frame = np.zeros((size[1], size[0], 3), np.uint8)
        cv2.rectangle(frame, (10 + 10 * i, 10), (40 + 10 * i, 50), (0, 0, 255), -1)  # BGR red
        writer.write(frame)
    writer.release()


def test_video_frames_equal_the_same_frames_as_images(detector, tmp_path):
    video = tmp_path / "clip.avi"
    _write_video(video)
    from_video = detector.predict(video, conf=0.0, max_det=20)
    assert [r.frame for r in from_video] == [0, 1, 2, 3]
    assert all(r.fps == pytest.approx(10.0) and r.image_size == (96, 64) for r in from_video)
    # The decoded frames are RGB: the red rectangle is red.
    first = next(detector.predict(video, conf=0.0, stream=True))
    assert first.image[:, 30, 20].tolist()[0] > 200 and first.image[:, 30, 20].tolist()[2] < 60
    frames_dir = tmp_path / "frames"
    frames_dir.mkdir()
    for r in detector.predict(video, conf=0.0, stream=True):
        Image.fromarray(r.image.permute(1, 2, 0).numpy()).save(frames_dir / f"{r.frame}.png")  # lossless
    from_images = detector.predict(frames_dir, conf=0.0, max_det=20)
    for v, im in zip(from_video, from_images):
        torch.testing.assert_close(v.scores, im.scores, atol=1e-6, rtol=0)
        torch.testing.assert_close(v.boxes, im.boxes, atol=1e-4, rtol=0)
        assert torch.equal(v.labels, im.labels)
    with pytest.raises(ValueError, match="no image to draw on"):
        from_video[0].plot()


def test_cli_predict_writes_images_video_and_coco_json(tmp_path, capsys):
    src = tmp_path / "src"
    src.mkdir()
    for i in range(2):
        Image.fromarray((np.random.default_rng(i).random((70, 90, 3)) * 255).astype(np.uint8)).save(src / f"im{i}.jpg")
    _write_video(src / "clip.avi", n=3)
    out = tmp_path / "out"
    rc = main(
        [
            "predict",
            str(src),
            "--model",
            "rtdetrv2_hgnetv2_n",
            "--imgsz",
            "256",
            "--conf",
            "0.0",
            "--max-det",
            "5",
            "--out",
            str(out),
            "--batch-size",
            "2",
        ]
    )
    assert rc == 0
    assert "5 image(s)/frame(s)" in capsys.readouterr().out
    assert {p.name for p in out.iterdir()} == {"im0.jpg", "im1.jpg", "clip.mp4", "predictions.json", "images.json"}
    preds = json.loads((out / "predictions.json").read_text())
    index = json.loads((out / "images.json").read_text())
    assert len(index["images"]) == 5 and len(preds) == 25
    assert {p["image_id"] for p in preds} == {0, 1, 2, 3, 4}
    assert all(len(p["bbox"]) == 4 and 0 <= p["score"] <= 1 for p in preds)
    frames = [im["frame"] for im in index["images"] if im["file_name"].endswith("clip.avi")]
    assert frames == [0, 1, 2]
    cap = cv2.VideoCapture(str(out / "clip.mp4"))
    assert int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) == 3
    cap.release()
    # COCO tools accept the results file.
    from faster_coco_eval import COCO

    gt = COCO()
    gt.dataset = {
        "images": [{"id": i, "width": 90, "height": 70} for i in range(5)],
        "annotations": [],
        "categories": [{"id": c} for c in range(80)],
    }
    gt.createIndex()
    assert len(gt.loadRes(str(out / "predictions.json")).getAnnIds()) == 25

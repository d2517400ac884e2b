"""An unreadable file in a folder is skipped with one warning, counted, and the rest still run.

Library (``iter_frames``, ``Detector.predict``) and command (``rtdetr predict``) alike;
``on_error="raise"`` / ``--strict`` stop at the first; all unreadable is an error.
"""

import json
import logging

import numpy as np
import pytest
from PIL import Image

import rtdetr.infer.command as infer_command
from rtdetr.cli import main
from rtdetr.data.issues import ImageReadError
from rtdetr.errors import UserError
from rtdetr.infer.sources import NothingReadableError, iter_frames


def _good(path, seed=0):
    Image.fromarray((np.random.default_rng(seed).random((40, 60, 3)) * 255).astype(np.uint8)).save(path)


def _truncated_jpeg(path):
    _good(path.with_suffix(".tmp.jpg"))
    data = path.with_suffix(".tmp.jpg").read_bytes()
    path.with_suffix(".tmp.jpg").unlink()
    path.write_bytes(data[: len(data) // 3])


@pytest.fixture
def mixed_folder(tmp_path):
    """a.png, d.png readable; b.png not an image, c.jpg truncated (sorted order: a, b, c, d)."""
    folder = tmp_path / "images"
    folder.mkdir()
    _good(folder / "a.png", 1)
    (folder / "b.png").write_bytes(b"this is not a png")
    _truncated_jpeg(folder / "c.jpg")
    _good(folder / "d.png", 2)
    return folder


def _skip_warnings(caplog):
    return [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING and "skipped" in r.getMessage()]


def test_iter_frames_skips_unreadable_files_and_warns_once_each(mixed_folder, caplog):
    caplog.set_level(logging.WARNING, logger="rtdetr.infer.sources")
    frames = list(iter_frames(mixed_folder))
    assert [f.source.rsplit("/", 1)[-1] for f in frames] == ["a.png", "d.png"]
    assert [f.index for f in frames] == [0, 1]
    warnings = _skip_warnings(caplog)
    assert len(warnings) == 2
    assert "b.png" in warnings[0] and "c.jpg" in warnings[1]
    assert all("\n" not in w for w in warnings)


def test_iter_frames_callback_gets_each_skipped_file(mixed_folder):
    seen = []
    frames = list(iter_frames(mixed_folder, on_error=lambda path, error: seen.append((path, error))))
    assert len(frames) == 2
    assert [p.rsplit("/", 1)[-1] for p, _ in seen] == ["b.png", "c.jpg"]
    assert all(isinstance(e, ImageReadError) and isinstance(e, UserError) for _, e in seen)


def test_iter_frames_raise_stops_at_the_first_unreadable_file(mixed_folder):
    frames = iter_frames(mixed_folder, on_error="raise")
    assert next(frames).source.endswith("a.png")
    with pytest.raises(ImageReadError, match="b.png"):
        next(frames)
    with pytest.raises(ValueError, match="on_error"):
        list(iter_frames(mixed_folder, on_error="ignore"))


def test_nothing_readable_is_an_error(tmp_path):
    (tmp_path / "x.png").write_bytes(b"junk")
    with pytest.raises(ImageReadError, match="x.png"):  # the single file's own error
        list(iter_frames(tmp_path / "x.png"))
    (tmp_path / "y.jpg").write_bytes(b"more junk")
    with pytest.raises(NothingReadableError, match="none of the 2 files") as info:
        list(iter_frames(tmp_path))
    assert isinstance(info.value, UserError)


def test_unopenable_video_is_skipped(tmp_path, caplog):
    pytest.importorskip("cv2")
    _good(tmp_path / "a.png")
    (tmp_path / "b.mp4").write_bytes(b"not a video" * 50)
    caplog.set_level(logging.WARNING, logger="rtdetr.infer.sources")
    assert [f.source.rsplit("/", 1)[-1] for f in iter_frames(tmp_path)] == ["a.png"]
    (warning,) = _skip_warnings(caplog)
    assert "b.mp4" in warning and "cannot open video" in warning


def test_detector_predict_skips_by_default_and_raises_on_request(detector, mixed_folder):
    results = detector.predict(mixed_folder, conf=0.0, max_det=2)
    assert [r.source.rsplit("/", 1)[-1] for r in results] == ["a.png", "d.png"]
    with pytest.raises(ImageReadError, match="b.png"):
        detector.predict(mixed_folder, on_error="raise")


@pytest.fixture
def cli_detector(detector, monkeypatch):
    """``rtdetr predict`` with the module's small detector (no model build per call)."""
    monkeypatch.setattr(infer_command, "detector_from_args", lambda args: detector)
    return detector


def _predict(folder, out, *extra):
    return main(
        [
            "predict",
            str(folder),
            "--model",
            "rtdetrv2_hgnetv2_n",
            "--device",
            "cpu",
            "--conf",
            "0",
            "--max-det",
            "2",
            "--out",
            str(out),
            *extra,
        ]
    )


def test_cli_predict_skips_counts_and_finishes(cli_detector, mixed_folder, tmp_path, capsys):
    out = tmp_path / "out"
    assert _predict(mixed_folder, out) == 0
    captured = capsys.readouterr()
    assert "2 image(s)/frame(s)" in captured.out
    assert "skipped 2 unreadable file(s) of 4" in captured.out
    assert "Traceback" not in captured.err
    index = json.loads((out / "images.json").read_text())
    assert [im["file_name"].rsplit("/", 1)[-1] for im in index["images"]] == ["a.png", "d.png"]
    assert sorted(p.name for p in out.iterdir()) == ["a.png", "d.png", "images.json", "predictions.json"]


def test_cli_predict_strict_stops_at_the_first_unreadable_file(cli_detector, mixed_folder, tmp_path, capsys):
    rc = _predict(mixed_folder, tmp_path / "out", "--strict")
    err = capsys.readouterr().err
    assert rc == 2
    assert "Traceback" not in err
    (line,) = [line for line in err.splitlines() if "error:" in line]
    assert "b.png" in line


def test_cli_predict_nothing_readable_exits_2_and_keeps_earlier_results(cli_detector, tmp_path, capsys):
    folder = tmp_path / "bad"
    folder.mkdir()
    (folder / "x.png").write_bytes(b"junk")
    (folder / "y.jpg").write_bytes(b"junk")
    out = tmp_path / "out"
    out.mkdir()
    (out / "predictions.json").write_text("[1]")  # an earlier run's results
    rc = _predict(folder, out)
    err = capsys.readouterr().err
    assert rc == 2 and "Traceback" not in err
    (line,) = [line for line in err.splitlines() if "error:" in line]
    assert "none of the 2 files could be read" in line
    assert sorted(p.name for p in out.iterdir()) == ["predictions.json"]
    assert (out / "predictions.json").read_text() == "[1]"

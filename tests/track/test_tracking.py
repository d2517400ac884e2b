"""Tracking: ids through a crossing, class-aware ids, the lost-track buffer in seconds, MOT files.

The tracker logic is under test, so detections are scripted from the generated clips'
ground truth (a detector would add its own errors); ``test_cli_track_*`` runs the real
detector end to end.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("trackers")

from rtdetr.infer.results import Detections  # noqa: E402
from rtdetr.track import TrackerError, make_tracker  # noqa: E402
from rtdetr.track.metrics import mot_scores  # noqa: E402
from rtdetr.track.mot import TrackLog, read_mot  # noqa: E402
from rtdetr.track.synthetic import make_clip, write_clip_video  # noqa: E402


def _dets(boxes, labels, size=(256, 256), scores=None) -> Detections:
    boxes = torch.as_tensor(boxes, dtype=torch.float32).reshape(-1, 4)
    n = len(boxes)
    return Detections(
        boxes=boxes,
        scores=torch.full((n,), 0.9) if scores is None else torch.as_tensor(scores, dtype=torch.float32),
        labels=torch.as_tensor(labels, dtype=torch.int64).reshape(-1),
        image_size=size,
    )


def _gt_detections(clip, t: int) -> Detections:
    rows = clip.gt_by_frame()[t]
    return _dets([r[3:] for r in rows], [r[2] for r in rows])


def _crossing_pair(clip) -> tuple[int, int]:
    """The two gt ids of the first same-class crossing pair (generated first: ids 1 and 2)."""
    return 1, 2


def test_ids_stay_stable_through_a_same_class_crossing():
    clip = make_clip(seed=3, frames=80, objects=2, crossings=1)
    a, b = _crossing_pair(clip)
    # The pair really crosses: their boxes overlap in some frame, and both are seen before and after.
    boxes = {(t, i): r[3:] for (t, i, *_), r in ((r[:2], r) for r in clip.gt)}
    overlap = [t for t in range(80) if (t, a) in boxes and (t, b) in boxes and _iou(boxes[t, a], boxes[t, b]) > 0.2]
    assert overlap, "the generated pair never overlaps"
    tracker = make_tracker("bytetrack", fps=clip.fps, minimum_consecutive_frames=1)
    assigned: dict[int, set[int]] = {a: set(), b: set()}
    for t in range(len(clip.frames)):
        out = tracker.update(_gt_detections(clip, t))
        gt_rows = clip.gt_by_frame()[t]
        for tid, box in zip(out.track_ids.tolist(), out.boxes.tolist()):
            gid = next(r[1] for r in gt_rows if list(r[3:]) == [round(v) for v in box])
            assigned[gid].add(tid)
    assert len(assigned[a]) == 1 and len(assigned[b]) == 1, assigned
    assert assigned[a] != assigned[b]
    assert min(overlap) > 0 and max(overlap) < 79  # seen on both sides of the crossing


def _iou(p, q) -> float:
    ix = max(0, min(p[2], q[2]) - max(p[0], q[0]))
    iy = max(0, min(p[3], q[3]) - max(p[1], q[1]))
    inter = ix * iy
    return inter / ((p[2] - p[0]) * (p[3] - p[1]) + (q[2] - q[0]) * (q[3] - q[1]) - inter)


def test_motmetrics_scores_a_generated_clip_with_crossings_perfectly_from_gt_boxes():
    clip = make_clip(seed=0, frames=90, objects=4, crossings=2)
    tracker = make_tracker("bytetrack", fps=clip.fps, minimum_consecutive_frames=1)
    hyp = []
    for t in range(len(clip.frames)):
        out = tracker.update(_gt_detections(clip, t))
        hyp += [(t, i, *b) for i, b in zip(out.track_ids.tolist(), out.boxes.tolist())]
    scores = mot_scores([clip.gt], [hyp])
    assert scores["num_switches"] == 0
    assert scores["idf1"] > 0.95 and scores["mota"] > 0.95
    # and the scorer does see switches: swapping two ids halfway is counted
    swapped = [(t, {1: 2, 2: 1}.get(i, i) if t >= 45 else i, *b) for t, i, *b in hyp]
    assert mot_scores([clip.gt], [swapped])["num_switches"] >= 2


def test_class_aware_tracking_gives_a_new_id_when_the_class_changes():
    box = [[50, 50, 90, 90]]
    aware = make_tracker("bytetrack", minimum_consecutive_frames=1)
    agnostic = make_tracker("bytetrack", minimum_consecutive_frames=1, class_aware=False)
    ids_aware, ids_agnostic = [], []
    for t in range(6):
        d = _dets(box, [0 if t < 3 else 1])
        ids_aware += aware.update(d).track_ids.tolist()
        ids_agnostic += agnostic.update(d).track_ids.tolist()
    # (a new track is confirmed on its second frame, so frame 0 and the first frame of class 1 have none)
    assert ids_agnostic == [1] * 5
    assert ids_aware == [1, 1, 2, 2]


def test_ids_are_unique_across_classes_and_rows_keep_the_detector_order():
    tracker = make_tracker("bytetrack", minimum_consecutive_frames=1)
    d = _dets([[0, 0, 20, 20], [100, 100, 130, 130], [50, 0, 70, 20]], [1, 0, 1], scores=[0.95, 0.9, 0.85])
    tracker.update(d)  # tracks are confirmed on their second frame
    out = tracker.update(d)
    assert sorted(out.track_ids.tolist()) == [1, 2, 3]
    assert torch.equal(out.boxes, d.boxes) and torch.equal(out.labels, d.labels)


@pytest.mark.parametrize("fps", [10.0, 60.0])
def test_lost_track_buffer_is_in_seconds_at_the_videos_fps(fps):
    """A 1 s buffer keeps a track through a 0.7 s gap and drops it after a 1.5 s gap, at 10 and 60 fps."""

    def id_after_gap(gap_s: float) -> int:
        tracker = make_tracker("bytetrack", fps=fps, lost_seconds=1.0, minimum_consecutive_frames=1)
        for _ in range(5):
            first = tracker.update(_dets([[40, 40, 80, 80]], [0])).track_ids.tolist()
        for _ in range(round(gap_s * fps)):
            tracker.update(_dets([], []))
        again = tracker.update(_dets([[40, 40, 80, 80]], [0])).track_ids.tolist()
        return first, again, tracker.update(_dets([[40, 40, 80, 80]], [0])).track_ids.tolist()

    before, again, after = id_after_gap(0.7)
    assert before == again == after == [1]  # re-associated at once
    before, again, after = id_after_gap(1.5)
    assert before == [1] and again == [] and after == [2]  # a new track, confirmed on its second frame


def test_bad_tracker_settings_are_user_errors():
    with pytest.raises(TrackerError, match="unknown tracker 'deepsort'"):
        make_tracker("deepsort")
    with pytest.raises(TrackerError, match="lost_seconds"):
        make_tracker(lost_seconds=-1)
    with pytest.raises(TrackerError, match="fps"):
        make_tracker(fps=0)
    with pytest.raises(TrackerError, match="no_such_option"):
        make_tracker(no_such_option=1)


def test_mot_txt_rows_follow_motchallenge_and_read_back(tmp_path):
    tracker = make_tracker("bytetrack", minimum_consecutive_frames=1)
    log = TrackLog(tmp_path)
    boxes = [[10.0, 20.0, 30.5, 60.0], [100.0, 100.0, 140.0, 150.0]]
    for t in range(3):
        moved = [[b[0] + 2 * t, b[1], b[2] + 2 * t, b[3]] for b in boxes]
        out = tracker.update(_dets(moved, [0, 1]))
        out.sequence = "clip.mp4"
        log.add(out, t)
    log.close()
    text = (tmp_path / "mot" / "clip.txt").read_text().splitlines()
    assert len(text) == 4  # frames 2 and 3: tracks are confirmed on their second frame
    first = text[0].split(",")
    assert len(first) == 10 and first[:2] == ["2", "1"] and first[-3:] == ["-1", "-1", "-1"]
    # 1-based left/top, width/height in pixels (frame 2's box is [12, 20, 32.5, 60] 0-based)
    assert [float(v) for v in first[2:6]] == [13.0, 21.0, 20.5, 40.0]
    rows = read_mot(tmp_path / "mot" / "clip.txt")
    assert rows[-1][:2] == (3, 2) and rows[-1][2:6] == pytest.approx((104.0, 100.0, 144.0, 150.0))
    tracks = json.loads((tmp_path / "tracks.json").read_text())["sequences"][0]
    assert tracks["frames"] == 3 and [t["id"] for t in tracks["tracks"]] == [1, 2]
    assert [b[0] for b in tracks["tracks"][0]["boxes"]] == [1, 2]
    bad = tmp_path / "bad.txt"
    bad.write_text("1,2,3\n")
    with pytest.raises(ValueError, match="bad.txt:1"):
        read_mot(bad)


def test_cli_track_writes_mot_json_and_annotated_video(tmp_path, capsys):
    cv2 = pytest.importorskip("cv2")
    from rtdetr.cli import main

    clip = make_clip(seed=1, frames=6, size=96)
    video = write_clip_video(clip, tmp_path / "clip.mp4")
    out = tmp_path / "out"
    argv = ["track", str(video), "--model", "rtdetrv2_hgnetv2_n", "--imgsz", "160", "--set", "num_queries=50"]
    argv += ["--conf", "0", "--max-det", "3", "--device", "cpu", "--out", str(out)]
    argv += ["--tracker-set", "track_activation_threshold=0", "--tracker-set", "high_conf_det_threshold=0"]
    assert main(argv) == 0
    assert "6 frame(s)" in capsys.readouterr().out
    assert {p.name for p in out.iterdir()} >= {"clip.mp4", "mot", "tracks.json", "predictions.json", "images.json"}
    rows = read_mot(out / "mot" / "clip.txt")
    assert rows and {r[0] for r in rows} <= set(range(1, 7)) and all(r[1] >= 1 for r in rows)
    cap = cv2.VideoCapture(str(out / "clip.mp4"))
    assert int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) == 6
    cap.release()


def test_cli_track_bad_tracker_option_is_one_error_line(tmp_path, capsys):
    from tests.infer.cli_contract import run_bad

    clip = make_clip(seed=1, frames=2, size=64)
    video = write_clip_video(clip, tmp_path / "clip.mp4")
    line = run_bad(["track", str(video), "--model", "x", "--tracker-set", "oops"], capsys)
    assert "--tracker-set" in line
    line = run_bad(["track", str(tmp_path / "missing.mp4"), "--model", "rtdetrv2_hgnetv2_n"], capsys)
    assert "missing.mp4" in line


def test_generated_clip_is_deterministic_and_has_entries_and_exits():
    a, b = make_clip(seed=5, frames=60), make_clip(seed=5, frames=60)
    assert np.array_equal(a.frames, b.frames) and a.gt == b.gt
    first_seen = {}
    last_seen = {}
    for t, i, *_ in a.gt:
        first_seen.setdefault(i, t)
        last_seen[i] = t
    assert any(t > 0 for t in first_seen.values()) or any(t < 59 for t in last_seen.values())


def test_track_folder_of_frames_is_one_sequence_and_ids_restart_per_video(tmp_path):
    """A folder of still frames is one sequence (MOT file named after it); two videos are two sequences."""
    from PIL import Image

    from rtdetr.infer import Detector
    from rtdetr.track.capture import iter_sequence_frames

    clip = make_clip(seed=2, frames=4, size=64)
    frames = tmp_path / "seq01"
    frames.mkdir()
    for t, f in enumerate(clip.frames):
        Image.fromarray(f).save(frames / f"{t:06d}.png")
    write_clip_video(clip, tmp_path / "videos" / "a.mp4")
    write_clip_video(clip, tmp_path / "videos" / "b.mp4")
    seqs = [(s.sequence, s.position) for s in iter_sequence_frames(str(frames))]
    assert seqs == [(str(frames), t) for t in range(4)]
    seqs = [(s.sequence, s.position) for s in iter_sequence_frames(str(tmp_path / "videos"))]
    assert [p for _, p in seqs] == [0, 1, 2, 3, 0, 1, 2, 3] and seqs[0][0].endswith("a.mp4")

    torch.manual_seed(0)
    det = Detector.from_pretrained("rtdetrv2_hgnetv2_n", num_classes=3, imgsz=160, precision="fp32", num_queries=30)
    opts = dict(conf=0.0, max_det=2, track_activation_threshold=0.0, high_conf_det_threshold=0.0)
    out = det.track(str(tmp_path / "videos"), stream=False, minimum_consecutive_frames=1, **opts)
    assert len(out) == 8 and {o.sequence for o in out} == {str(tmp_path / "videos" / n) for n in ("a.mp4", "b.mp4")}
    # the same pixels twice: the second video's ids restart, so both videos give the same ids
    assert [o.track_ids.tolist() for o in out[:4]] == [o.track_ids.tolist() for o in out[4:]]
    assert all(o.speed["track"] >= 0 for o in out)
    log = TrackLog(tmp_path / "out")
    for o in det.track(str(frames), **opts):
        log.add(o, int(Path(o.source).stem))
    log.close()
    assert (tmp_path / "out" / "mot" / "seq01.txt").is_file()


def test_unopenable_stream_is_one_error_line(tmp_path, capsys):
    pytest.importorskip("cv2")
    from tests.infer.cli_contract import run_bad

    line = run_bad(
        [
            "track",
            f"file://{tmp_path}/no_such.mp4",
            "--model",
            "rtdetrv2_hgnetv2_n",
            "--imgsz",
            "160",
            "--set",
            "num_queries=30",
            "--device",
            "cpu",
            "--out",
            str(tmp_path / "out"),
        ],
        capsys,
    )
    assert "cannot open stream" in line and "no_such.mp4" in line
    assert not (tmp_path / "out").exists()

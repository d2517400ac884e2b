"""Tracking results on disk: MOTChallenge text files and a JSON of tracks.

MOTChallenge rows (one per box, comma separated, one file per sequence)::

    frame, id, bb_left, bb_top, bb_width, bb_height, conf, x, y, z

``frame`` counts from 1; ``bb_left``/``bb_top`` are 1-based pixel coordinates (the
benchmark's convention: the top-left pixel is (1, 1)), so a box with our 0-based xyxy
``(x0, y0, x1, y1)`` is written ``x0 + 1, y0 + 1, x1 - x0, y1 - y0``; ``x, y, z`` are -1
(2D tracking). :func:`read_mot` undoes the shift.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from .results import TrackedDetections

__all__ = ["mot_lines", "read_mot", "TrackLog"]


def mot_lines(det: TrackedDetections, frame: int) -> list[str]:
    """MOTChallenge rows of one frame (``frame`` 1-based)."""
    lines = []
    for tid, (x0, y0, x1, y1), score in zip(det.track_ids.tolist(), det.boxes.tolist(), det.scores.tolist()):
        lines.append(f"{frame},{tid},{x0 + 1:.2f},{y0 + 1:.2f},{x1 - x0:.2f},{y1 - y0:.2f},{score:.4f},-1,-1,-1")
    return lines


def read_mot(path: str | os.PathLike) -> list[tuple[int, int, float, float, float, float, float]]:
    """Rows of a MOTChallenge file as ``(frame, id, x0, y0, x1, y1, conf)``, boxes 0-based xyxy pixels.

    Raises:
        ValueError: a row that is not 10 (or the ground truth's 9) comma-separated numbers.
    """
    rows = []
    for n, line in enumerate(Path(path).read_text().splitlines(), 1):
        if not line.strip():
            continue
        parts = line.split(",")
        if len(parts) not in (9, 10):
            raise ValueError(f"{path}:{n}: expected 10 comma-separated values, got {len(parts)}: {line!r}")
        try:
            f, i, left, top, w, h, conf = (float(p) for p in parts[:7])
        except ValueError as exc:
            raise ValueError(f"{path}:{n}: not numbers: {line!r}") from exc
        rows.append((int(f), int(i), left - 1, top - 1, left - 1 + w, top - 1 + h, conf))
    return rows


class TrackLog:
    """Collects tracked frames per sequence and writes ``mot/<sequence>.txt`` and ``tracks.json``.

    ``tracks.json``: ``{"sequences": [{"name", "source", "fps", "width", "height", "frames",
    "tracks": [{"id", "label", "name", "category_id", "boxes": [[frame, x0, y0, x1, y1, score], ...]}]}]}``
    with frames 0-based and boxes xyxy pixels, tracks sorted by id.
    """

    def __init__(self, out: str | os.PathLike) -> None:
        self.out = Path(out)
        self.sequences: list[dict[str, Any]] = []
        self._lines: list[list[str]] = []
        self._tracks: list[dict[int, dict[str, Any]]] = []
        self._names: set[str] = set()

    def _start(self, det: TrackedDetections) -> None:
        stem = Path(str(det.sequence or "sequence")).stem or "sequence"
        name, n = stem, 1
        while name in self._names:  # two sequences with one name: keep both
            name, n = f"{stem}_{n}", n + 1
        self._names.add(name)
        self.sequences.append(
            {
                "name": name,
                "source": det.sequence,
                "fps": det.fps,
                "width": det.image_size[0],
                "height": det.image_size[1],
                "frames": 0,
                "tracks": [],
            }
        )
        self._lines.append([])
        self._tracks.append({})

    def add(self, det: TrackedDetections, frame: int) -> None:
        """Record one frame (0-based position in its sequence); a new ``det.sequence`` starts a new sequence."""
        if not self.sequences or self.sequences[-1]["source"] != det.sequence or frame == 0:
            self._start(det)
        seq, tracks = self.sequences[-1], self._tracks[-1]
        seq["frames"] = frame + 1
        self._lines[-1] += mot_lines(det, frame + 1)
        ids = det.category_ids
        for tid, box, score, label, name in zip(
            det.track_ids.tolist(), det.boxes.tolist(), det.scores.tolist(), det.labels.tolist(), det.names
        ):
            track = tracks.setdefault(
                tid,
                {
                    "id": tid,
                    "label": label,
                    "name": name,
                    "category_id": int(ids[label]) if ids else label,
                    "boxes": [],
                },
            )
            track["boxes"].append([frame, *(round(v, 2) for v in box), round(score, 4)])

    def close(self) -> list[Path]:
        """Write the files (atomically: a reader never sees half a file); returns their paths."""
        written = []
        (self.out / "mot").mkdir(parents=True, exist_ok=True)
        for seq, lines, tracks in zip(self.sequences, self._lines, self._tracks):
            seq["tracks"] = [tracks[k] for k in sorted(tracks)]
            written.append(_atomic_write(self.out / "mot" / f"{seq['name']}.txt", "".join(f"{x}\n" for x in lines)))
        written.append(_atomic_write(self.out / "tracks.json", json.dumps({"sequences": self.sequences})))
        return written


def _atomic_write(path: Path, text: str) -> Path:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    tmp.replace(path)
    return path

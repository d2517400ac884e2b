"""Sharded batch inference under ``torchrun``: every rank predicts its share, rank 0 merges.

The input list (files, in ``expand_path`` order) is cut into contiguous *chunks* of
``chunk_size`` files; chunk ``c`` belongs to rank ``c % world_size``. A rank decodes only
its chunks' files, and writes one *part* per chunk to ``OUT/parts/part-NNNNN.json``:
the COCO results and image records of that chunk. A part is written to a temporary name
and renamed when complete (an atomic rename on POSIX file systems), so a part file that
exists is a finished one: the rename is the completion marker. A rank killed mid-chunk
leaves only a ``.tmp`` file, which is ignored and overwritten.

``OUT/parts/manifest.json`` (rank 0) records the run's *fingerprint*: the file list and
every setting that changes the detections (model, weights, conf, classes, imgsz, ...).
A part carries the fingerprint it was made under; a re-run with the same inputs and
settings skips the parts already there (any world size: chunks do not depend on it),
and a run with different ones starts over.

After a barrier, rank 0 merges: every chunk's part must exist and match the manifest,
else :class:`IncompleteShardsError` names the missing chunks and nothing is written.
The merged ``predictions.json`` / ``images.json`` number images in input order, as a
single-process run does (image ids are positions in the whole stream).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..data.issues import ImageReadError
from ..errors import UserError
from .sources import NothingReadableError, is_video
from .writer import PredictionWriter

__all__ = [
    "IncompleteShardsError",
    "ShardPlan",
    "plan_shards",
    "fingerprint",
    "prepare_parts",
    "run_shard",
    "merge_parts",
    "media_names",
]

log = logging.getLogger(__name__)

PARTS = "parts"
_FORMAT = 1


class IncompleteShardsError(UserError, RuntimeError):
    """Some chunks have no finished part (a rank failed or was stopped): nothing was merged."""


@dataclass(frozen=True)
class ShardPlan:
    """Which chunks of ``files`` this rank predicts.

    Attributes:
        files: the whole input list, in order.
        chunk_size: files per chunk.
        rank, world_size: this process and the number of processes.
        fingerprint: hash of the files and settings (see :func:`fingerprint`).
    """

    files: tuple[str, ...]
    chunk_size: int
    rank: int
    world_size: int
    fingerprint: str

    @property
    def num_chunks(self) -> int:
        return math.ceil(len(self.files) / self.chunk_size)

    def chunk_files(self, chunk: int) -> list[str]:
        return list(self.files[chunk * self.chunk_size : (chunk + 1) * self.chunk_size])

    def my_chunks(self) -> list[int]:
        """This rank's chunks: ``rank, rank + world_size, ...`` (round robin balances the load)."""
        return list(range(self.rank, self.num_chunks, self.world_size))


def fingerprint(files: Sequence[str], settings: dict[str, Any]) -> str:
    """sha256 of the file list and the settings (JSON, sorted keys); model files add size and mtime."""
    h = hashlib.sha256()
    h.update(json.dumps({"files": list(files), "settings": settings, "format": _FORMAT}, sort_keys=True).encode())
    for key in ("model", "weights"):
        path = settings.get(key)
        if isinstance(path, str) and os.path.isfile(path):
            st = os.stat(path)  # a retrained checkpoint at the same path is another model
            h.update(f"{key}:{st.st_size}:{st.st_mtime_ns}".encode())
    return h.hexdigest()


def plan_shards(
    files: Sequence[str], *, rank: int, world_size: int, settings: dict[str, Any], chunk_size: int | None = None
) -> ShardPlan:
    """Split ``files`` deterministically; ``chunk_size`` default: 64, fewer when ranks would idle."""
    if not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} is not in 0..{world_size - 1}")
    if chunk_size is None:
        chunk_size = max(1, min(64, math.ceil(len(files) / world_size)))
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    return ShardPlan(tuple(files), chunk_size, rank, world_size, fingerprint(files, settings))


def _part_path(out: Path, chunk: int) -> Path:
    return out / PARTS / f"part-{chunk:05d}.json"


def _write_atomic(path: Path, data: Any) -> None:
    tmp = path.with_name(path.name + f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data))
    os.replace(tmp, path)  # the part appears whole or not at all


def prepare_parts(out: str | os.PathLike, plan: ShardPlan) -> int:
    """Rank 0, before any rank predicts: write the manifest; drop parts of another run.

    Returns:
        how many finished parts a re-run will skip.
    """
    parts = Path(out) / PARTS
    parts.mkdir(parents=True, exist_ok=True)
    manifest = parts / "manifest.json"
    old = None
    if manifest.is_file():
        try:
            old = json.loads(manifest.read_text()).get("fingerprint")
        except (json.JSONDecodeError, OSError):
            old = None
    if old != plan.fingerprint:
        stale = sorted(parts.glob("part-*.json"))
        if stale:
            log.warning("%s: %d part(s) of a run with other inputs or settings are removed", parts, len(stale))
        for p in stale:
            p.unlink()
    for tmp in parts.glob("*.tmp"):  # left by a rank stopped while writing
        tmp.unlink()
    _write_atomic(
        manifest,
        {"fingerprint": plan.fingerprint, "num_files": len(plan.files), "chunk_size": plan.chunk_size},
    )
    return sum(_read_part(Path(out), plan, c) is not None for c in range(plan.num_chunks))


def _read_part(out: Path, plan: ShardPlan, chunk: int) -> dict[str, Any] | None:
    """The chunk's part if it is finished and belongs to this run, else None."""
    path = _part_path(out, chunk)
    try:
        part = json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None
    ok = (
        part.get("fingerprint") == plan.fingerprint
        and part.get("chunk") == chunk
        and part.get("files") == plan.chunk_files(chunk)
        and part.get("complete") is True
    )
    return part if ok else None


def media_names(files: Sequence[str]) -> list[str]:
    """Annotated-media name per file as one :class:`PredictionWriter` over all of them names it
    (image: its file name; video: stem + ``.mp4``; repeats get a numeric prefix)."""
    used: set[str] = set()
    names = []
    for f in files:
        name = Path(f).stem + ".mp4" if is_video(f) else Path(f).name
        candidate, n = name, 1
        while candidate in used:
            candidate, n = f"{n}_{name}", n + 1
        used.add(candidate)
        names.append(candidate)
    return names


@dataclass
class ShardStats:
    """What :func:`run_shard` did on this rank."""

    chunks_done: int = 0
    chunks_skipped: int = 0
    images: int = 0
    skipped_files: list[str] = field(default_factory=list)


def run_shard(
    out: str | os.PathLike,
    plan: ShardPlan,
    predict: Callable[[list[str], Callable[[str, Exception], None]], Iterator[Any]],
    *,
    save_images: bool = True,
) -> ShardStats:
    """Predict this rank's unfinished chunks and write a part for each.

    Args:
        predict: ``(files, on_error) -> iterator of Detections`` (e.g. ``Detector.predict``
            with ``stream=True``); ``on_error`` is called for each unreadable file skipped.
        save_images: write annotated media into ``out`` too (names as a single run gives them).
    """
    out = Path(out)
    (out / PARTS).mkdir(parents=True, exist_ok=True)
    names = media_names(plan.files)
    stats = ShardStats()
    for chunk in plan.my_chunks():
        if _read_part(out, plan, chunk) is not None:
            stats.chunks_skipped += 1
            log.info("chunk %d: finished in an earlier run, skipped", chunk)
            continue
        files = plan.chunk_files(chunk)
        lo = chunk * plan.chunk_size
        reserved = set(names[:lo]) | set(names[lo + len(files) :])  # other chunks' media names
        # names that other chunks' media get stay theirs
        writer = PredictionWriter(out, save_images=save_images, save_json=False, reserved_names=reserved)
        skipped: list[str] = []
        try:
            with writer:
                for det in predict(files, lambda path, error, into=skipped: into.append(path)):
                    writer.add(det)
        except (NothingReadableError, ImageReadError):
            # The stream raises this when every file it was given was unreadable (with on_error
            # "raise", at the first one): for a chunk, that is an empty part unless strict.
            if writer.images or len(skipped) < len(files):
                raise
        part = {
            "format": _FORMAT,
            "fingerprint": plan.fingerprint,
            "chunk": chunk,
            "files": files,
            "images": writer.images,
            "annotations": writer.annotations,
            "class_names": writer.class_names,
            "category_ids": writer.category_ids,
            "skipped": skipped,
            "complete": True,
        }
        _write_atomic(_part_path(out, chunk), part)
        stats.chunks_done += 1
        stats.images += len(writer.images)
        stats.skipped_files += skipped
        log.info("chunk %d: %d image(s)/frame(s) -> %s", chunk, len(writer.images), _part_path(out, chunk).name)
    return stats


@dataclass
class MergeStats:
    images: int
    annotations: int
    skipped_files: list[str]


def merge_parts(out: str | os.PathLike, plan: ShardPlan) -> MergeStats:
    """Rank 0, after every rank finished: write ``predictions.json`` and ``images.json`` from the parts.

    Raises:
        IncompleteShardsError: a chunk has no finished part of this run (nothing is written).
    """
    out = Path(out)
    parts = [_read_part(out, plan, c) for c in range(plan.num_chunks)]
    missing = [c for c, p in enumerate(parts) if p is None]
    if missing:
        shown = ", ".join(map(str, missing[:10])) + (" ..." if len(missing) > 10 else "")
        raise IncompleteShardsError(
            f"{out / PARTS}: {len(missing)} of {plan.num_chunks} chunk(s) have no finished part ({shown}); "
            "a rank failed or was stopped. Run the same command again: finished chunks are skipped"
        )
    images: list[dict[str, Any]] = []
    annotations: list[dict[str, Any]] = []
    names = ids = None
    skipped: list[str] = []
    for part in parts:
        base = len(images)  # a part's image ids count from 0: shift them to the stream position
        for img in part["images"]:
            images.append({**img, "id": base + int(img["id"])})
        for ann in part["annotations"]:
            annotations.append({**ann, "image_id": base + int(ann["image_id"])})
        names = names or part["class_names"]
        ids = ids or part["category_ids"]
        skipped += part["skipped"]
    if not images:
        raise NothingReadableError(f"none of the {len(plan.files)} files could be read (see the ranks' warnings)")
    names = names or []
    ids = ids or list(range(len(names)))
    index = {"images": images, "categories": [{"id": int(i), "name": n} for i, n in zip(ids, names)]}
    _write_atomic(out / "predictions.json", annotations)
    _write_atomic(out / "images.json", index)
    return MergeStats(len(images), len(annotations), skipped)

"""Where a run's numbers go: JSONL + CSV always, TensorBoard and PNG curves when installed."""

from __future__ import annotations

import csv
import io
import json
import logging
import os
from pathlib import Path
from typing import Any

__all__ = ["RunLogger"]

log = logging.getLogger(__name__)


def _write_atomic(path: Path, text: str) -> None:
    """Replace ``path`` by ``text`` in one step (a kill leaves the old or the new file, not half)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


class RunLogger:
    """Appends one record per epoch to ``metrics.jsonl`` and rewrites ``results.csv``.

    A record is ``{"epoch": n, ...}`` with ``n`` the number of epochs completed.
    :meth:`begin` is called with the epoch a run starts from (0, or a checkpoint's
    epoch when resuming): the log keeps the earlier epochs' records and drops later
    ones, which a resumed run is about to train again, so every epoch appears once.
    TensorBoard events go to ``tb/`` when the ``tensorboard`` package is present;
    :meth:`close` draws ``curves.png`` (losses and AP) when matplotlib is present.
    """

    def __init__(self, out_dir: str | Path) -> None:
        self.out_dir = Path(out_dir)
        self.records: list[dict[str, Any]] = []
        self._tb = None
        self._tb_tried = False
        self._purge_step: int | None = None

    @property
    def jsonl_path(self) -> Path:
        return self.out_dir / "metrics.jsonl"

    @property
    def csv_path(self) -> Path:
        return self.out_dir / "results.csv"

    def begin(self, epoch: int) -> None:
        """Start logging a run that continues after ``epoch`` completed epochs (0: a fresh run)."""
        kept = [r for r in self._read_jsonl() if isinstance(r.get("epoch"), int) and r["epoch"] <= epoch]
        self.records = kept
        if self.jsonl_path.exists():
            _write_atomic(self.jsonl_path, "".join(json.dumps(r) + "\n" for r in kept))
        if kept:
            self._write_csv()
        else:  # a fresh run (or a reused folder): nothing of an earlier run's table stays
            self.csv_path.unlink(missing_ok=True)
        # TensorBoard drops its own events from this step on when the writer opens.
        self._purge_step = epoch + 1 if epoch > 0 else None
        if kept:
            log.info("continuing %s from epoch %d (%d earlier record(s) kept)", self.jsonl_path, epoch, len(kept))

    def _read_jsonl(self) -> list[dict[str, Any]]:
        if not self.jsonl_path.is_file():
            return []
        records = []
        for line in self.jsonl_path.read_text().splitlines():
            try:
                record = json.loads(line)
            except json.JSONDecodeError:  # a line cut short by a kill: that epoch is trained again
                continue
            if isinstance(record, dict):
                records.append(record)
        return records

    def _write_csv(self) -> None:
        keys = list(dict.fromkeys(k for r in self.records for k in r))
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=keys)
        writer.writeheader()
        writer.writerows(self.records)
        _write_atomic(self.csv_path, buf.getvalue())

    def _writer(self):
        if not self._tb_tried:
            self._tb_tried = True
            try:
                from torch.utils.tensorboard import SummaryWriter

                self._tb = SummaryWriter(str(self.out_dir / "tb"), purge_step=self._purge_step)
            except Exception:  # tensorboard is optional
                log.debug("tensorboard not installed; skipping event files")
        return self._tb

    def log(self, record: dict[str, Any]) -> None:
        self.records.append(record)
        with open(self.jsonl_path, "a") as f:
            f.write(json.dumps(record) + "\n")
        self._write_csv()
        tb = self._writer()
        if tb is not None:
            for k, v in record.items():
                if isinstance(v, (int, float)) and k != "epoch":
                    tb.add_scalar(k, v, record["epoch"])
            tb.flush()
        shown = ", ".join(f"{k} {v:.4g}" for k, v in record.items() if isinstance(v, float))
        log.info("epoch %d: %s", record["epoch"], shown)

    def close(self, plot: bool = True) -> Path | None:
        """Close the event files; draw ``curves.png`` unless ``plot`` is False (an interrupted run)."""
        if self._tb is not None:
            self._tb.close()
            self._tb, self._tb_tried = None, False
        return self.plot() if plot else None

    def plot(self) -> Path | None:
        if not self.records:
            return None
        try:
            import matplotlib

            matplotlib.use("Agg")
            import matplotlib.pyplot as plt
        except ImportError:
            log.info("matplotlib not installed; no curves.png (pip install 'rtdetr[plot]')")
            return None
        epochs = [r["epoch"] for r in self.records]
        fig, (ax_loss, ax_ap) = plt.subplots(1, 2, figsize=(10, 4))
        for k in ("loss", "loss_vfl", "loss_bbox", "loss_giou"):
            if all(k in r for r in self.records):
                ax_loss.plot(epochs, [r[k] for r in self.records], marker="o", label=k)
        ax_loss.set_xlabel("epoch")
        ax_loss.set_title("training loss")
        if ax_loss.lines:
            ax_loss.legend()
        for k in ("AP", "AP50"):
            pts = [(r["epoch"], r[k]) for r in self.records if k in r]
            if pts:
                ax_ap.plot(*zip(*pts), marker="o", label=k)
        ax_ap.set_xlabel("epoch")
        ax_ap.set_title("validation (EMA)")
        if ax_ap.lines:
            ax_ap.legend()
        fig.tight_layout()
        path = self.out_dir / "curves.png"
        fig.savefig(path, dpi=100)
        plt.close(fig)
        return path

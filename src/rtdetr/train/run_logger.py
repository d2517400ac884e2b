"""Where a run's numbers go: JSONL + CSV always, TensorBoard and PNG curves when installed."""

from __future__ import annotations

import csv
import json
import logging
from pathlib import Path
from typing import Any

__all__ = ["RunLogger"]

log = logging.getLogger(__name__)


class RunLogger:
    """Appends one record per epoch to ``metrics.jsonl`` and rewrites ``results.csv``.

    TensorBoard events go to ``tb/`` when the ``tensorboard`` package is present;
    :meth:`close` draws ``curves.png`` (losses and AP) when matplotlib is present.
    """

    def __init__(self, out_dir: str | Path) -> None:
        self.out_dir = Path(out_dir)
        self.records: list[dict[str, Any]] = []
        self._tb = None
        try:
            from torch.utils.tensorboard import SummaryWriter

            self._tb = SummaryWriter(str(self.out_dir / "tb"))
        except Exception:  # tensorboard is optional
            log.debug("tensorboard not installed; skipping event files")

    def log(self, record: dict[str, Any]) -> None:
        self.records.append(record)
        with open(self.out_dir / "metrics.jsonl", "a") as f:
            f.write(json.dumps(record) + "\n")
        keys = list(dict.fromkeys(k for r in self.records for k in r))
        with open(self.out_dir / "results.csv", "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=keys)
            writer.writeheader()
            writer.writerows(self.records)
        if self._tb is not None:
            for k, v in record.items():
                if isinstance(v, (int, float)) and k != "epoch":
                    self._tb.add_scalar(k, v, record["epoch"])
            self._tb.flush()
        shown = ", ".join(f"{k} {v:.4g}" for k, v in record.items() if isinstance(v, float))
        log.info("epoch %d: %s", record["epoch"], shown)

    def close(self) -> Path | None:
        if self._tb is not None:
            self._tb.close()
        return self.plot()

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

"""A run never loses work: best.pt after a resume, logs that continue, checkpoint files, Ctrl-C."""

from __future__ import annotations

import csv
import json
import logging
import os
import stat
from pathlib import Path

import pytest
import torch
from torch.utils.data import Dataset

import rtdetr
from rtdetr.errors import UserError
from rtdetr.train.checkpoint import load_checkpoint, save_checkpoint
from rtdetr.train.engine import Trainer
from rtdetr.train.train_config import TrainConfig

from .test_engine import TinyBoxes, collate


class ScriptedEvaluator:
    """Stands in for the COCO evaluator: reports the next AP of a script, one per evaluation."""

    def __init__(self, aps: list[float]):
        self.aps = aps

    def update(self, predictions):
        pass

    def synchronize(self):
        pass

    def compute(self):
        return {"AP": self.aps.pop(0), "AP50": 0.0}


def _trainer(out: Path, epochs: int, aps: list[float] | None = None, **kw) -> Trainer:
    torch.manual_seed(0)
    model = rtdetr.build_model("rtdetrv2_hgnetv2_n", num_classes=3, num_queries=10, num_denoising=10)
    cfg = TrainConfig(
        epochs=epochs,
        batch_size=2,
        imgsz=64,
        warmup_iters=2,
        ema_warmup=2,
        num_workers=0,
        out_dir=str(out),
        progress=False,
        device="cpu",
        max_steps_per_epoch=1,
        **kw,
    )
    evaluation = {}
    if aps is not None:
        evaluation = dict(val_dataset=TinyBoxes(n=2, size=64), make_evaluator=lambda: ScriptedEvaluator(aps))
    return Trainer(model, TinyBoxes(n=2, size=64), config=cfg, collate_fn=collate, **evaluation)


def test_a_resumed_run_keeps_best_pt_when_a_later_epoch_is_worse(tmp_path):
    first = _trainer(tmp_path, epochs=1, aps=[0.5])
    first.fit()
    assert load_checkpoint(tmp_path / "last.pt")["best_ap"] == 0.5  # last.pt knows its own epoch's AP
    best_bytes = (tmp_path / "best.pt").read_bytes()

    resumed = _trainer(tmp_path, epochs=2, aps=[0.3])
    resumed.fit(resume=tmp_path / "last.pt")
    assert (tmp_path / "best.pt").read_bytes() == best_bytes  # epoch 2 (AP 0.3) did not replace epoch 1 (0.5)
    assert load_checkpoint(tmp_path / "best.pt")["epoch"] == 1
    last = load_checkpoint(tmp_path / "last.pt")
    assert last["epoch"] == 2 and last["best_ap"] == 0.5


def test_resume_continues_the_logs_and_removes_a_killed_save(tmp_path):
    _trainer(tmp_path, epochs=1).fit()
    # As if killed after logging epoch 2 but before (or while) saving it: the log has a
    # record last.pt does not, and a temp file is left behind by the interrupted save.
    with open(tmp_path / "metrics.jsonl", "a") as f:
        f.write(json.dumps({"epoch": 2, "step": 99, "stale": True}) + "\n")
    stale = tmp_path / ".last.pt.12345.abcd.tmp"
    stale.write_bytes(b"")

    resumed = _trainer(tmp_path, epochs=2)
    assert not stale.exists()  # removed when the run starts
    resumed.fit(resume=tmp_path / "last.pt")

    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records] == [1, 2]  # each epoch once
    assert "stale" not in records[1] and records[1]["step"] == 2
    with open(tmp_path / "results.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["epoch"] for r in rows] == ["1", "2"]  # the epochs before the resume too
    assert not list(tmp_path.glob(".*.tmp"))


def test_a_fresh_run_in_a_reused_folder_starts_its_logs_over(tmp_path):
    (tmp_path / "metrics.jsonl").write_text(json.dumps({"epoch": 1, "old": True}) + "\n")
    _trainer(tmp_path, epochs=1).fit()
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert len(records) == 1 and "old" not in records[0]


def test_checkpoints_respect_the_umask_and_clean_up_stale_temp_files(tmp_path):
    stale = tmp_path / ".last.pt.999.dead.tmp"
    stale.write_bytes(b"")
    other = tmp_path / ".best.pt.999.dead.tmp"  # another checkpoint's: its own next save removes it
    other.write_bytes(b"")
    old = os.umask(0o022)
    try:
        path = save_checkpoint({"model": {"w": torch.ones(1)}}, tmp_path / "last.pt")
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644  # not tempfile's 0600
    assert not stale.exists() and other.exists()


def test_the_main_rank_saves_checkpoints_without_a_run_logger(tmp_path):
    trainer = _trainer(tmp_path, epochs=1)
    trainer.run_logger = None  # e.g. a caller that logs elsewhere
    trainer.fit()
    assert load_checkpoint(tmp_path / "last.pt")["epoch"] == 1


def test_ctrl_c_names_the_last_checkpoint_and_how_to_resume(tmp_path, caplog):
    trainer = _trainer(tmp_path, epochs=3)
    real = trainer.criterion.forward
    calls = {"n": 0}

    def interrupted_in_epoch_two(outputs, targets):
        calls["n"] += 1
        if calls["n"] == 2:  # max_steps_per_epoch=1: the second step is epoch 2's first
            raise KeyboardInterrupt
        return real(outputs, targets)

    trainer.criterion.forward = interrupted_in_epoch_two
    with caplog.at_level(logging.WARNING, logger="rtdetr.train.engine"), pytest.raises(KeyboardInterrupt):
        trainer.fit()
    message = caplog.text
    assert "interrupted in epoch 2" in message
    assert str(tmp_path / "last.pt") in message and "after epoch 1" in message and "--resume" in message
    assert load_checkpoint(tmp_path / "last.pt")["epoch"] == 1


def test_ctrl_c_before_the_first_checkpoint_says_there_is_none(tmp_path, caplog):
    trainer = _trainer(tmp_path, epochs=1)

    def interrupt(outputs, targets):
        raise KeyboardInterrupt

    trainer.criterion.forward = interrupt
    with caplog.at_level(logging.WARNING, logger="rtdetr.train.engine"), pytest.raises(KeyboardInterrupt):
        trainer.fit()
    assert "no checkpoint was written yet" in caplog.text


class Empty(Dataset):
    name = "annotations/instances_train.json"

    def __len__(self):
        return 0

    def __getitem__(self, i):
        raise IndexError(i)


def test_an_empty_training_set_is_a_user_error_naming_it(tmp_path):
    model = rtdetr.build_model("rtdetrv2_hgnetv2_n", num_classes=3, num_queries=10)
    cfg = TrainConfig(epochs=1, batch_size=2, imgsz=64, out_dir=str(tmp_path), progress=False, device="cpu")
    with pytest.raises(UserError, match=r"train split \(annotations/instances_train.json\) has no images"):
        Trainer(model, Empty(), config=cfg, collate_fn=collate).fit()


@pytest.mark.parametrize(
    "field, value, flag",
    [
        ("batch_size", 0, "--batch-size"),
        ("epochs", 0, "--epochs"),
        ("accumulate", 0, "--accumulate"),
        ("imgsz", 16, "--imgsz"),
        ("lr", -1.0, "--lr"),
        ("lr", float("nan"), "--lr"),
        ("max_time_s", 0.0, "--max-time"),
        ("num_workers", -1, "--workers"),
        ("ema_decay", 1.5, "--ema-decay"),
        ("lr_schedule", "linear", "--lr-schedule"),
        ("lr_flat_share", 1.0, "--set lr_flat_share=..."),
        ("betas", 0.9, r"--set betas=..."),
        ("betas", (0.9, 1.5), r"--set betas=..."),
    ],
)
def test_invalid_training_settings_are_user_errors_naming_the_flag(field, value, flag):
    with pytest.raises(UserError, match=rf"{field} \({flag}\) must be"):
        TrainConfig(**{field: value})

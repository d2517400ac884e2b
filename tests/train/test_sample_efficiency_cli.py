"""`rtdetr train --set` with the sample-efficiency options: they reach the run, its checkpoint, resume and val."""

from __future__ import annotations

import pytest

from rtdetr.cli import main
from rtdetr.data.mosaic import MosaicDataset
from rtdetr.train.checkpoint import load_checkpoint
from rtdetr.train.launch import build_trainer
from rtdetr.train.train_config import TrainConfig

OPTIONS = ["num_o2m_queries=12", "o2m_repeat=3", "o2m_loss_weight=0.5", "loss_cls=mal", "mosaic_prob=1.0"]
OPTIONS += ["dense_enc_outputs=true", "dense_topk=5", "dense_cls_loss=vfl"]
SMALL = ["--model", "rtdetrv2_hgnetv2_n", "--imgsz", "64", "--batch-size", "2", "--workers", "0", "--device", "cpu"]
SMALL += ["--warmup-iters", "2", "--ema-warmup", "2", "--set", "num_queries=10"]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    from rtdetr.data import generate_synthetic_dataset

    return generate_synthetic_dataset(tmp_path_factory.mktemp("synth") / "d", num_train=4, num_val=2, imgsz=64)


def test_options_reach_the_trainer(data, tmp_path):
    overrides = {"num_queries": 10, "num_o2m_queries": 12, "loss_cls": "mal", "o2m_repeat": 3, "mosaic_prob": 1.0}
    cfg = TrainConfig(imgsz=64, batch_size=2, num_workers=0, device="cpu", out_dir=str(tmp_path / "run"), stop_epoch=3)
    trainer = build_trainer("rtdetrv2_hgnetv2_n", data, cfg, model_overrides=overrides)
    assert trainer.cfg.loss_cls == "mal" and trainer.cfg.mosaic_prob == 1.0
    assert trainer.model.decoder.num_o2m_queries == 12
    assert "loss_mal" in trainer.criterion.weight_dict and trainer.criterion.o2m_repeat == 3
    assert isinstance(trainer.train_dataset, MosaicDataset) and trainer.train_dataset.stop_epoch == 3
    images, targets = next(iter(trainer._train_loader(0)))
    out = trainer.train_model(images, targets)
    losses = trainer.criterion(out, targets)
    assert "loss_mal_o2m_2" in losses and "loss_vfl" not in losses


def test_train_resume_and_val_with_all_options(data, tmp_path, capsys):
    run = tmp_path / "run"
    sets = [x for opt in OPTIONS for x in ("--set", opt)]
    assert main(["train", "--data", str(data), "--out", str(run), "--epochs", "1", *SMALL, *sets]) == 0
    state = load_checkpoint(run / "last.pt")
    assert state["config"]["decoder"]["num_o2m_queries"] == 12
    assert state["train_config"]["loss_cls"] == "mal" and state["train_config"]["mosaic_prob"] == 1.0
    assert state["config"]["decoder"]["dense_enc_outputs"] is True and state["train_config"]["dense_topk"] == 5
    argv = ["train", "--data", str(data), "--out", str(run), "--epochs", "2", "--resume", *SMALL, *sets]
    assert main(argv) == 0
    assert load_checkpoint(run / "last.pt")["epoch"] == 2
    capsys.readouterr()
    assert main(["val", "--model", str(run / "last.pt"), "--data", str(data), "--imgsz", "64", "--device", "cpu"]) == 0
    assert "AP50" in capsys.readouterr().out


def test_bad_option_value_is_a_one_line_error(data, tmp_path, capsys):
    assert main(["train", "--data", str(data), "--out", str(tmp_path / "r"), *SMALL, "--set", "loss_cls=focal"]) == 2
    assert "loss_cls (--set loss_cls=...) must be one of vfl, mal, got 'focal'" in capsys.readouterr().err


def test_mosaic_that_can_never_run_is_reported(data, tmp_path, caplog):
    # The demo / from-scratch settings stop the strong augmentation at epoch 0; mosaics follow
    # stop_epoch unless mosaic_stop_epoch is set, so they would silently never happen.
    cfg = TrainConfig(imgsz=64, batch_size=2, num_workers=0, device="cpu", out_dir=str(tmp_path / "run"), stop_epoch=0)
    build_trainer("rtdetrv2_hgnetv2_n", data, cfg, model_overrides={"num_queries": 10, "mosaic_prob": 0.5})
    assert "mosaic_prob=0.5 has no effect" in caplog.text
    caplog.clear()
    trainer = build_trainer(
        "rtdetrv2_hgnetv2_n",
        data,
        cfg,
        model_overrides={"num_queries": 10, "mosaic_prob": 0.5, "mosaic_stop_epoch": 4},
    )
    assert "no effect" not in caplog.text and trainer.train_dataset.stop_epoch == 4

"""Training sizes vs the query count: checked before training, multi-scale fitted to the model."""

from __future__ import annotations

import logging

import pytest
import torch

import rtdetr
from rtdetr.data import BatchCollator, default_multi_scales, generate_synthetic_dataset
from rtdetr.errors import UserError
from rtdetr.train.engine import Trainer
from rtdetr.train.input_sizes import encoder_tokens, fit_multi_scales, min_image_size
from rtdetr.train.train_config import TrainConfig

from .test_engine import TinyBoxes


@pytest.fixture(scope="module")
def nano():
    return rtdetr.build_model("rtdetrv2_hgnetv2_n", num_classes=3).eval()  # 300 queries, strides 16 and 32


@pytest.mark.parametrize("size", [64, 100, 240, 257])
def test_token_count_matches_the_encoder_output(nano, size):
    with torch.no_grad():
        feats = nano.encoder(nano.backbone(torch.rand(1, 3, size, size)))
    assert encoder_tokens(nano, size) == sum(f.shape[-2] * f.shape[-1] for f in feats)


def test_multi_scale_sizes_too_small_for_the_queries_are_dropped_with_a_log_line(nano, caplog):
    assert encoder_tokens(nano, 240) == 289 < 300 and min_image_size(nano) == 241
    with caplog.at_level(logging.INFO, logger="rtdetr.train.input_sizes"):
        scales = fit_multi_scales(nano, 320, default_multi_scales(320))
    assert scales == [s for s in default_multi_scales(320) if s != 240]
    assert "dropped size(s) 240" in caplog.text
    assert fit_multi_scales(nano, 640, default_multi_scales(640)) == default_multi_scales(640)  # reference: unchanged


def test_an_imgsz_too_small_for_the_queries_names_the_fixes(nano):
    with pytest.raises(
        UserError, match=r"--imgsz 160 gives 125 encoder tokens.*--imgsz 256 or more.*--set num_queries=125"
    ):
        fit_multi_scales(nano, 160, None)


def test_the_trainer_refuses_multi_scale_sizes_the_model_cannot_take(tmp_path):
    model = rtdetr.build_model("rtdetrv2_hgnetv2_n", num_classes=3, num_queries=30)  # 64 px: 16 + 4 tokens
    cfg = TrainConfig(epochs=1, batch_size=2, imgsz=96, out_dir=str(tmp_path), progress=False, device="cpu")
    with pytest.raises(
        UserError, match=r"training size 64 px gives 20 encoder tokens.*--set num_queries=20.*--no-multi-scale"
    ):
        Trainer(model, TinyBoxes(n=2, size=96), config=cfg, collate_fn=BatchCollator(multi_scales=[64, 96, 128]))


def test_nano_at_320_trains_at_the_smallest_default_multi_scale_size(tmp_path):
    """The reported crash: rtdetrv2_hgnetv2_n, --imgsz 320, default multi-scale and 300 queries."""
    from rtdetr.train.launch import build_trainer

    data = generate_synthetic_dataset(tmp_path / "data", num_train=2, num_val=1, imgsz=64)
    cfg = TrainConfig(
        epochs=1,
        batch_size=2,
        imgsz=320,
        device="cpu",
        out_dir=str(tmp_path / "run"),
        num_workers=0,
        progress=False,
        max_steps_per_epoch=1,
        ema=False,
        stop_epoch=None,
    )
    trainer = build_trainer("rtdetrv2_hgnetv2_n", data, cfg)
    smallest = min(trainer.collate_fn.multi_scales)
    assert trainer.model.decoder.num_queries == 300 and smallest == 256
    trainer.collate_fn.multi_scales = [smallest]  # the draw that crashed (240 before)
    stats = trainer.train_one_epoch(0)
    assert torch.isfinite(torch.tensor(stats["loss"]))

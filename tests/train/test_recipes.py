"""`rtdetr train --recipe`: what each recipe sets, what flags override, and the time budget's clock."""

import time

import pytest

from rtdetr.cli import _train_setup, build_parser
from rtdetr.config import ConfigError
from rtdetr.data import generate_synthetic_dataset
from rtdetr.train.launch import train_for_budget
from rtdetr.train.recipes import RECIPES, get_recipe
from rtdetr.train.train_config import TrainConfig


def _setup(*argv):
    return _train_setup(build_parser().parse_args(["train", "--data", "d", *argv]))


def test_scratch_recipe_sets_its_preset_settings_and_queries():
    model, cfg, overrides = _setup("--recipe", "scratch", "--imgsz", "320")
    assert model == "dfine_cspdarknet_n"
    assert (cfg.lr, cfg.backbone_lr, cfg.lr_schedule, cfg.batch_size) == (1e-3, 1e-3, "cosine", 4)
    assert (cfg.ema_decay, cfg.multi_scale, cfg.stop_epoch, cfg.imgsz) == (0.99, False, 0, 320)
    assert cfg.ema_max_share == 0.05  # a short budgeted run averages over at most 5% of its steps
    assert (cfg.lr_flat_share, cfg.betas) == (0.5, (0.9, 0.99))  # flat-cosine, a ~100-step second moment
    assert overrides == {"num_queries": 100, "num_layers": 2, "dense_enc_outputs": True}


def test_reference_recipe_is_the_presets_paper_recipe():
    model, cfg, overrides = _setup()
    assert model == "rtdetr_r18vd" and overrides == {}
    assert (cfg.lr, cfg.backbone_lr, cfg.lr_schedule, cfg.batch_size, cfg.ema_decay) == (1e-4, 1e-5, "flat", 4, 0.9999)
    assert cfg.multi_scale and cfg.epochs == 72 and cfg.ema_max_share == 0.0


def test_flags_win_over_the_recipe_and_set_routes_train_fields_and_model_fields():
    model, cfg, overrides = _setup(
        "--recipe",
        "scratch",
        "--model",
        "rtdetr_r18vd",
        "--batch-size",
        "8",
        "--lr-schedule",
        "flat",
        "--set",
        "ema_decay=0.5",
        "--set",
        "num_queries=50",
        "--set",
        "num_denoising=0",
    )
    assert model == "rtdetr_r18vd"
    assert (cfg.batch_size, cfg.lr_schedule, cfg.ema_decay, cfg.lr) == (8, "flat", 0.5, 1e-3)
    assert overrides == {"num_queries": 50, "num_layers": 2, "dense_enc_outputs": True, "num_denoising": 0}


def test_recipe_choices_match_the_registry_and_unknown_names_are_config_errors():
    action = next(
        a for a in build_parser()._subparsers._group_actions[0].choices["train"]._actions if a.dest == "recipe"
    )
    assert sorted(action.choices) == sorted(RECIPES)
    with pytest.raises(ConfigError, match="known: reference, scratch"):
        get_recipe("fast")


def test_the_budget_counts_from_start_so_time_spent_before_fit_is_not_given_again(tmp_path):
    data = generate_synthetic_dataset(tmp_path / "data", num_train=8, num_val=2, imgsz=64)
    cfg = TrainConfig(
        epochs=3,
        batch_size=2,
        imgsz=64,
        device="cpu",
        out_dir=str(tmp_path / "run"),
        num_workers=0,
        max_time_s=30.0,
        progress=False,
        eval_every=10**6,
    )
    overrides = {"num_queries": 10, "num_denoising": 10}
    # The whole budget was spent before training started: one step, then the deadline stops it.
    spent = train_for_budget(
        "rtdetrv2_hgnetv2_n", data, cfg, fit_epochs=False, start=time.perf_counter() - 30.0, model_overrides=overrides
    )
    assert spent.step == 1 and spent.epoch == 1
    # With the budget still ahead, the same run trains all its epochs (4 steps each).
    fresh = train_for_budget(
        "rtdetrv2_hgnetv2_n",
        data,
        TrainConfig(**{**cfg.__dict__, "out_dir": str(tmp_path / "run_b")}),
        fit_epochs=False,
        model_overrides=overrides,
    )
    assert fresh.epoch == 3 and fresh.step == 12


def test_recipe_model_overrides_only_apply_where_the_preset_has_the_field():
    from rtdetr.train.recipes import Recipe

    recipe = Recipe("t", "test", model={"num_queries": 50, "use_lab": False})
    assert recipe.model_overrides_for("rtdetrv2_hgnetv2_n") == {"num_queries": 50, "use_lab": False}
    assert recipe.model_overrides_for("rtdetr_r18vd") == {"num_queries": 50}  # PResNet has no use_lab

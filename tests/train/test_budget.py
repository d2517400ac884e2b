"""epochs_for_budget: the epoch count that lets a cosine schedule end with the time budget."""

from rtdetr.data import generate_synthetic_dataset
from rtdetr.train.launch import epochs_for_budget
from rtdetr.train.train_config import TrainConfig


def test_epochs_scale_with_the_budget_and_never_drop_below_one(tmp_path):
    data = generate_synthetic_dataset(tmp_path / "data", num_train=8, num_val=2, imgsz=64)
    cfg = TrainConfig(
        epochs=1,
        batch_size=4,
        imgsz=64,
        device="cpu",
        out_dir=str(tmp_path / "run"),
        num_workers=0,
        max_time_s=1.0,
        progress=False,
    )
    kw = dict(model_overrides={"num_queries": 10, "num_denoising": 10}, probe_steps=2)
    assert epochs_for_budget("rtdetrv2_hgnetv2_n", data, cfg, 1e-3, **kw) == 1
    # A CPU step here takes well under a second alone (thousands of 2-step epochs per hour), a
    # few seconds on a loaded machine: the bound only has to separate "many" from the floor of 1.
    assert epochs_for_budget("rtdetrv2_hgnetv2_n", data, cfg, 3600, **kw) > 50
    assert (tmp_path / "run" / "probe").is_dir()  # the probe's own directory, not the run's


def test_build_trainer_passes_augmentation_knobs_to_the_training_transforms(tmp_path):
    from torchvision.transforms import v2

    from rtdetr.train.launch import build_trainer

    data = generate_synthetic_dataset(tmp_path / "data", num_train=4, num_val=2, imgsz=64)
    cfg = TrainConfig(epochs=1, batch_size=2, imgsz=64, device="cpu", out_dir=str(tmp_path / "run"), progress=False)
    overrides = {"num_queries": 10, "num_denoising": 10}
    trainer = build_trainer(
        "rtdetrv2_hgnetv2_n", data, cfg, model_overrides=overrides, augment={"zoom_out_side_range": (1.0, 2.0)}
    )
    zoom = [t for t in trainer.train_dataset.transforms.strong.transforms if isinstance(t, v2.RandomZoomOut)]
    assert len(zoom) == 1 and tuple(zoom[0].side_range) == (1.0, 2.0)
    default = build_trainer("rtdetrv2_hgnetv2_n", data, cfg, model_overrides=overrides)
    zoom = [t for t in default.train_dataset.transforms.strong.transforms if isinstance(t, v2.RandomZoomOut)]
    assert tuple(zoom[0].side_range) == (1.0, 4.0)  # the paper's

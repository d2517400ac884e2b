"""Training engine: exact resume, divergence reporting, atomic checkpoints."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch.utils.data import Dataset

import rtdetr
from rtdetr.train.checkpoint import load_checkpoint, save_checkpoint
from rtdetr.train.engine import Trainer, TrainingDiverged
from rtdetr.train.train_config import TrainConfig
from rtdetr.weights import WeightsFormatError


class TinyBoxes(Dataset):
    """Deterministic random images with 0-3 boxes each (some images empty)."""

    def __init__(self, n: int = 6, size: int = 96, seed: int = 0):
        g = torch.Generator().manual_seed(seed)
        self.items = []
        for i in range(n):
            k = i % 4
            cxcy = 0.25 + 0.5 * torch.rand(k, 2, generator=g)
            wh = 0.1 + 0.2 * torch.rand(k, 2, generator=g)
            target = {
                "labels": torch.randint(0, 3, (k,), generator=g),
                "boxes": torch.cat([cxcy, wh], 1),
                "image_id": torch.tensor(i),
                "orig_size": torch.tensor([size, size]),
            }
            self.items.append((torch.rand(3, size, size, generator=g), target))

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        image, target = self.items[i]
        # a little randomness drawn from the global RNG, like real augmentation
        if torch.rand(()) < 0.5:
            image = image.flip(-1)
        return image, target


def collate(batch):
    return torch.stack([b[0] for b in batch]), [b[1] for b in batch]


# The smallest preset with every part a checkpoint holds (param groups, batch norm, EMA,
# denoising, aux heads): r18vd made the resume test alone take ~13 s.
MODEL = "rtdetrv2_hgnetv2_n"


def _trainer(tmp_path: Path, epochs: int, preset: str = MODEL, **kw) -> Trainer:
    torch.manual_seed(0)
    model = rtdetr.build_model(preset, num_classes=3, num_queries=20, num_denoising=20)
    cfg = TrainConfig(
        epochs=epochs,
        batch_size=2,
        imgsz=96,
        warmup_iters=2,
        ema_warmup=2,
        num_workers=0,
        out_dir=str(tmp_path),
        progress=False,
        device="cpu",
        **kw,
    )
    return Trainer(model, TinyBoxes(), config=cfg, collate_fn=collate)


def _assert_same_state(a: dict, b: dict):
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_resume_is_exact(tmp_path):
    full = _trainer(tmp_path / "full", epochs=2)
    full.fit()

    first = _trainer(tmp_path / "split", epochs=1)
    first.fit()
    ckpt = load_checkpoint(tmp_path / "split" / "last.pt")
    assert ckpt["epoch"] == 1 and ckpt["step"] == 3
    assert set(ckpt) >= {"model", "ema", "optimizer", "lr_scheduler", "scaler", "rng", "config", "train_config"}
    assert "module" in ckpt["ema"]

    torch.manual_seed(123)  # a fresh process would start from some other RNG state
    resumed = _trainer(tmp_path / "split", epochs=2)
    resumed.fit(resume=tmp_path / "split" / "last.pt")
    assert resumed.epoch == 2 and resumed.step == full.step == 6
    _assert_same_state(full.model.state_dict(), resumed.model.state_dict())
    _assert_same_state(full.ema.module.state_dict(), resumed.ema.module.state_dict())
    # and training really changed the weights
    torch.manual_seed(0)  # the weights every _trainer starts from
    fresh = rtdetr.build_model(MODEL, num_classes=3, num_queries=20, num_denoising=20).state_dict()
    assert not torch.equal(
        fresh["decoder.enc_score_head.weight"], full.model.state_dict()["decoder.enc_score_head.weight"]
    )


def test_train_step_accumulates_then_steps_once(tmp_path):
    """``update=False`` only adds 1/accumulate of the batch's gradient; ``optimizer_step``
    then steps the weights, the schedule, the step count and the EMA once."""
    single, accum = _trainer(tmp_path / "a", epochs=1), _trainer(tmp_path / "b", epochs=1, accumulate=2)
    images, targets = collate([single.train_dataset.items[i] for i in (1, 2)])
    before = {k: v.clone() for k, v in accum.model.state_dict().items()}
    for trainer in (single, accum):
        trainer.model.train()
        torch.manual_seed(1)  # the same denoising noise in both
        loss, losses = trainer.train_step(images, targets, update=False)
        assert loss.requires_grad is False and "loss_giou" in losses
    assert accum.step == 0 and accum.ema.updates == 0
    params = dict(accum.model.named_parameters())
    assert all(torch.equal(params[k], before[k]) for k in params)
    grads = {k: p.grad for k, p in single.model.named_parameters() if p.grad is not None}
    assert len(grads) > 100
    for k, g in grads.items():
        torch.testing.assert_close(params[k].grad, g / 2, rtol=1e-5, atol=1e-7, msg=k)
    lr_before = accum.optimizer.param_groups[0]["lr"]
    lr_of = {id(p): g["lr"] for g in accum.optimizer.param_groups for p in g["params"]}  # this step's
    accum.optimizer_step()
    # AdamW's first step moves an element by lr * m / (sqrt(v) + eps) (bias-corrected moments of the
    # clipped gradient): for a gradient far below eps that is under the float32 spacing of the
    # weight, which then cannot change (seen on AVX2 kernels for a 1.0-valued LAB scale whose
    # clipped gradient was 7e-11); only weights the step can move are asserted to move.
    name_of, movable = {id(p): k for k, p in params.items()}, set()
    for group in accum.optimizer.param_groups:
        beta1, beta2 = group["betas"]
        for p in group["params"]:
            state = accum.optimizer.state.get(p)
            if not state:
                continue
            m, v = state["exp_avg"] / (1 - beta1), state["exp_avg_sq"] / (1 - beta2)
            update = lr_of[id(p)] * m.abs() / (v.sqrt() + group["eps"])
            k = name_of[id(p)]
            if (update > 4 * torch.finfo(p.dtype).eps * before[k].abs()).any():
                movable.add(k)
    assert accum.step == 1 and accum.ema.updates == 1
    assert accum.optimizer.param_groups[0]["lr"] != lr_before  # the warm-up moved on
    assert all(p.grad is None for p in accum.model.parameters())
    pushed = [k for k in grads if k in movable]
    assert len(pushed) > 100
    assert [k for k in pushed if torch.equal(params[k], before[k])] == []


def test_non_finite_loss_names_step_and_term(tmp_path):
    trainer = _trainer(tmp_path, epochs=1)
    real = trainer.criterion.forward

    def poisoned(outputs, targets):
        losses = real(outputs, targets)
        losses["loss_giou_aux_1"] = losses["loss_giou_aux_1"] * float("nan")
        return losses

    trainer.criterion.forward = poisoned
    with pytest.raises(TrainingDiverged, match=r"epoch 1 before optimizer step 1: .*loss_giou_aux_1=nan"):
        trainer.fit()


def test_checkpoint_write_is_atomic(tmp_path, monkeypatch):
    path = tmp_path / "last.pt"
    save_checkpoint({"model": {"w": torch.ones(2)}}, path)

    def crash(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", crash)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint({"model": {"w": torch.zeros(2)}}, path)
    monkeypatch.undo()
    assert torch.equal(load_checkpoint(path)["model"]["w"], torch.ones(2))
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]  # no temp file left behind


def test_load_checkpoint_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.pt"):
        load_checkpoint(tmp_path / "missing.pt")
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(WeightsFormatError, match="not a PyTorch checkpoint"):
        load_checkpoint(junk)


def test_param_groups_and_frozen_backbone(tmp_path):
    trainer = _trainer(tmp_path, epochs=1, freeze_backbone=True, backbone_lr=1e-5, lr=1e-4)
    names = {g["name"]: g for g in trainer.optimizer.param_groups}
    assert set(names) == {"head", "head_no_decay"}  # frozen backbone is not optimized
    assert names["head_no_decay"]["weight_decay"] == 0.0 and names["head"]["weight_decay"] == 1e-4
    before = {k: v.clone() for k, v in trainer.model.backbone.state_dict().items()}
    trainer.fit()
    _assert_same_state(before, trainer.model.backbone.state_dict())  # BN statistics too


def test_betas_and_the_flat_share_reach_the_optimizer_and_the_schedule(tmp_path):
    trainer = _trainer(tmp_path, epochs=10, betas=(0.9, 0.99), lr_schedule="cosine", lr_flat_share=0.5)
    assert {g["betas"] for g in trainer.optimizer.param_groups} == {(0.9, 0.99)}
    sched = trainer.scheduler
    half = sched.total_iters // 2
    assert half > sched.warmup_iters  # past the warm-up, still in the flat half
    assert sched.flat_share == 0.5 and sched._factor(half - 1) == 1.0 and sched._factor(sched.total_iters) < 0.1


def test_worker_count_defaults_to_the_machine_and_an_explicit_count_wins(tmp_path, monkeypatch):
    import rtdetr.data.workers as workers

    monkeypatch.setattr(workers, "available_cpus", lambda: 2)
    torch.manual_seed(0)
    model = rtdetr.build_model("rtdetr_r18vd", num_classes=3, num_queries=20, num_denoising=20)
    cfg = TrainConfig(epochs=1, batch_size=2, imgsz=96, out_dir=str(tmp_path), progress=False, device="cpu")
    assert cfg.num_workers is None
    trainer = Trainer(model, TinyBoxes(), config=cfg, collate_fn=collate)
    assert trainer.num_workers == 0 and trainer._train_loader(0).num_workers == 0  # 2-core CPU: in-process
    monkeypatch.setattr(workers, "available_cpus", lambda: 16)
    assert Trainer(model, TinyBoxes(), config=cfg, collate_fn=collate).num_workers == 4
    explicit = TrainConfig(epochs=1, batch_size=2, imgsz=96, out_dir=str(tmp_path), device="cpu", num_workers=1)
    assert Trainer(model, TinyBoxes(), config=explicit, collate_fn=collate)._train_loader(0).num_workers == 1


def test_compile_option_compiles_backbone_and_encoder_in_place(tmp_path, monkeypatch):
    """``compile=True``: backbone and encoder compiled in place (checkpoint keys unchanged),
    the decoder and the EMA copy eager, and the compiled model computes the eager function."""
    if torch.backends.cpu.get_cpu_capability() == "AVX2":
        # The kernels rtdetr.runtime asks about. Under ATEN_CPU_CAPABILITY=avx2 on an AVX-512
        # machine (the README's way to test AVX2 code paths), inductor's own SIMD width gave a
        # compiled channels-last backbone that returned ~1e33 garbage (torch 2.14.1); with
        # AVX2's 8 lanes set explicitly it matches eager, as both widths do natively. A real
        # AVX2 CPU picks 8 lanes by itself, so there this changes nothing.
        monkeypatch.setattr(torch._inductor.config.cpp, "simdlen", 8)
    # r18vd: the backbone the AVX2 note above is about
    trainer = _trainer(tmp_path, epochs=1, preset="rtdetr_r18vd", multi_scale=False, compile=True)
    for part in (trainer.model.backbone, trainer.model.encoder):
        assert part._compiled_call_impl is not None
    assert trainer.model.decoder._compiled_call_impl is None  # denoising shapes change per batch
    assert all(m._compiled_call_impl is None for m in trainer.ema.module.modules())
    assert trainer.model.state_dict().keys() == trainer.ema.module.state_dict().keys()
    assert not any("_orig_mod" in k for k in trainer.model.state_dict())
    x = torch.rand(2, 3, 96, 96).contiguous(memory_format=torch.channels_last)
    with torch.no_grad():  # the EMA starts as a copy of the model: same weights, eager
        compiled, eager = trainer.model.eval()(x), trainer.ema.module.eval()(x)
    torch.testing.assert_close(compiled.pred_logits, eager.pred_logits, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(compiled.pred_boxes, eager.pred_boxes, atol=1e-4, rtol=1e-4)


def test_the_seed_fixes_the_initial_weights(tmp_path):
    """``rtdetr train --seed N`` twice starts from the same model; another seed from another."""
    from rtdetr.data import generate_synthetic_dataset
    from rtdetr.train.launch import build_trainer

    data = generate_synthetic_dataset(tmp_path / "data", num_train=2, num_val=1, imgsz=64)

    def initial(seed: int, run: str) -> dict:
        torch.manual_seed(1234 + len(run))  # whatever the process's RNG held before must not matter
        cfg = TrainConfig(imgsz=64, device="cpu", out_dir=str(tmp_path / run), seed=seed, progress=False)
        return build_trainer("dfine_cspdarknet_n", data, cfg, model_overrides={"num_queries": 10}).model.state_dict()

    a, b, c = initial(0, "a"), initial(0, "bb"), initial(1, "ccc")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert any(not torch.equal(a[k], c[k]) for k in a if a[k].is_floating_point())

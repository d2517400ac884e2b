"""rtdetr.runtime: one bf16 capability check for training and inference, and the CPU set-up."""

from __future__ import annotations

import logging
import subprocess
import sys

import pytest
import torch
from torch.utils.data import Dataset

import rtdetr
from rtdetr import runtime
from rtdetr.errors import UserError


@pytest.fixture
def native_bf16(monkeypatch):
    """Set what the capability check answers: ``native_bf16(True)`` / ``(False)``."""

    def set_(value: bool) -> None:
        monkeypatch.setattr(runtime, "cpu_supports_bf16", lambda: value)

    return set_


def _runtime_warnings(caplog) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "rtdetr.runtime" and r.levelno == logging.WARNING]


# ------------------------------------------------------------------------------ the check


@pytest.fixture
def cpu(monkeypatch):
    """A CPU whose ATen capability and bf16 flags a test sets; no env overrides."""
    for var in (runtime.CPU_BF16_ENV, "ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA"):
        monkeypatch.delenv(var, raising=False)

    def set_(capability: str, flags: bool) -> None:
        monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: capability)
        monkeypatch.setattr(runtime, "_hardware_has_bf16", lambda: flags)

    return set_


def test_bf16_is_native_only_with_avx512_kernels_and_bf16_flags(cpu, monkeypatch):
    cpu("AVX512", True)
    assert runtime.cpu_supports_bf16()
    cpu("AVX512", False)  # AVX-512 without AVX512-BF16 / AMX (e.g. Skylake-SP)
    assert not runtime.cpu_supports_bf16()
    # ATEN_CPU_CAPABILITY=avx2 leaves /proc/cpuinfo's AMX flags in place: the kernels decide.
    for capability in ("AVX2", "DEFAULT", "NO AVX"):
        cpu(capability, True)
        assert not runtime.cpu_supports_bf16(), capability
    cpu("AVX512", True)
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX2")
    assert not runtime.cpu_supports_bf16()
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX512_CORE_AMX")
    assert runtime.cpu_supports_bf16()


def test_env_override_wins_both_ways(cpu, monkeypatch):
    cpu("AVX2", False)
    monkeypatch.setenv(runtime.CPU_BF16_ENV, "1")
    assert runtime.cpu_supports_bf16()
    cpu("AVX512", True)
    monkeypatch.setenv(runtime.CPU_BF16_ENV, "0")
    assert not runtime.cpu_supports_bf16()


def test_real_check_follows_this_process_aten_capability():
    """Whatever this machine is: no AVX-512 kernels (e.g. ATEN_CPU_CAPABILITY=avx2) means no bf16."""
    if torch.backends.cpu.get_cpu_capability() != "AVX512":
        assert not runtime.cpu_supports_bf16()
    else:
        assert isinstance(runtime.cpu_supports_bf16(), bool)


def test_torch_backend_keeps_the_old_import_path():
    from rtdetr.infer import torch_backend

    assert torch_backend.cpu_supports_bf16 is runtime.cpu_supports_bf16
    assert torch_backend.keep_freed_memory is runtime.keep_freed_memory


# --------------------------------------------------------------------------- resolutions


@pytest.mark.parametrize(("native", "expected"), [(True, "bf16"), (False, "fp32")])
def test_auto_precision_on_cpu(native_bf16, native, expected):
    native_bf16(native)
    assert runtime.resolve_precision("auto", "cpu") == expected
    for explicit in ("fp32", "bf16"):
        assert runtime.resolve_precision(explicit, "cpu") == explicit


def test_bad_precision_is_a_user_error():
    with pytest.raises(UserError, match="precision must be one of"):
        runtime.resolve_precision("int4", "cpu")
    with pytest.raises(ValueError, match="amp_dtype"):  # also a ValueError, for older callers
        runtime.resolve_amp_dtype("cpu", True, "float32")


def test_amp_falls_back_to_fp32_on_emulated_bf16_with_one_warning(native_bf16, caplog):
    native_bf16(False)
    with caplog.at_level(logging.WARNING):
        assert runtime.resolve_amp_dtype("cpu", True) is None
        assert runtime.resolve_amp_dtype("cpu", True, "bfloat16") is None
    assert len(_runtime_warnings(caplog)) == 2  # one per resolution, i.e. per run
    assert "float32" in caplog.records[0].getMessage() and "amp_force" in caplog.records[0].getMessage()
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        assert runtime.resolve_amp_dtype("cpu", True, force=True) == torch.bfloat16
        assert runtime.resolve_amp_dtype("cpu", False) is None
        assert runtime.resolve_amp_dtype("cuda", True) == torch.float16  # CUDA: not the CPU check's business
    assert not _runtime_warnings(caplog)


def test_amp_keeps_bf16_where_native(native_bf16, caplog):
    native_bf16(True)
    with caplog.at_level(logging.WARNING):
        assert runtime.resolve_amp_dtype("cpu", True) == torch.bfloat16
    assert not _runtime_warnings(caplog)


# ---------------------------------------------------------------------------------- set-up


def _denormals_flushed() -> bool:
    tiny = torch.tensor([1e-39], dtype=torch.float32)  # below float32's smallest normal (1.2e-38)
    return float(tiny * 1.0) == 0.0


def test_setup_cpu_runtime_flushes_denormals_and_sets_threads():
    threads = torch.get_num_threads()
    if not torch.set_flush_denormal(False):
        pytest.skip("no flush-denormal support on this CPU")
    try:
        assert not _denormals_flushed()
        runtime.setup_cpu_runtime("cpu", threads=1)
        assert _denormals_flushed() and torch.get_num_threads() == 1
        runtime.setup_cpu_runtime("cpu")  # idempotent, and leaves threads alone when not asked
        assert _denormals_flushed() and torch.get_num_threads() == 1
        with pytest.raises(UserError, match="threads"):
            runtime.setup_cpu_runtime("cpu", threads=0)
    finally:
        torch.set_num_threads(threads)
        torch.set_flush_denormal(True)


def test_setup_cpu_runtime_keeps_freed_memory_once_and_only_for_the_cpu(monkeypatch):
    calls = []
    monkeypatch.setattr(runtime, "keep_freed_memory", lambda: calls.append(1) or True)
    monkeypatch.setattr(runtime, "_malloc_kept", None)
    runtime.setup_cpu_runtime("cuda", keep_memory=True)  # a GPU run keeps glibc's defaults
    runtime.setup_cpu_runtime("cpu")
    assert not calls
    runtime.setup_cpu_runtime("cpu", keep_memory=True)
    runtime.setup_cpu_runtime("cpu", keep_memory=True)
    assert len(calls) == 1


# --------------------------------------------------------------------------------- trainer


class _Tiny(Dataset):
    def __init__(self, n: int = 2, size: int = 64):
        g = torch.Generator().manual_seed(0)
        self.items = [
            (
                torch.rand(3, size, size, generator=g),
                {
                    "labels": torch.tensor([1]),
                    "boxes": torch.tensor([[0.5, 0.5, 0.3, 0.3]]),
                    "image_id": torch.tensor(i),
                    "orig_size": torch.tensor([size, size]),
                },
            )
            for i in range(n)
        ]

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        return self.items[i]


def _collate(batch):
    return torch.stack([b[0] for b in batch]), [b[1] for b in batch]


def _train_step_dtype(tmp_path, **amp) -> tuple[object, torch.dtype]:
    """Build a Trainer, run one step; return it and the dtype its Linear layers computed in."""
    from rtdetr.train.engine import Trainer
    from rtdetr.train.train_config import TrainConfig

    torch.manual_seed(0)
    model = rtdetr.build_model("rtdetrv2_hgnetv2_n", num_classes=2, num_queries=10, num_denoising=0)
    cfg = TrainConfig(
        epochs=1,
        batch_size=2,
        imgsz=64,
        warmup_iters=1,
        ema=False,
        num_workers=0,
        multi_scale=False,
        max_steps_per_epoch=1,
        out_dir=str(tmp_path),
        progress=False,
        device="cpu",
        **amp,
    )
    trainer = Trainer(model, _Tiny(), config=cfg, collate_fn=_collate)
    seen: set[torch.dtype] = set()
    hooks = [
        m.register_forward_hook(lambda m, i, o: seen.add(o.dtype))
        for m in model.modules()
        if isinstance(m, torch.nn.Linear)
    ]
    trainer.train_one_epoch(0)
    for h in hooks:
        h.remove()
    (dtype,) = seen  # every Linear computed in one dtype
    return trainer, dtype


def test_cpu_trainer_keeps_freed_memory(monkeypatch, tmp_path):
    # 5-10k page faults per training step (batch 4, 320 px) without it
    calls = []
    monkeypatch.setattr(runtime, "keep_freed_memory", lambda: calls.append(1) or True)
    monkeypatch.setattr(runtime, "_malloc_kept", None)
    _train_step_dtype(tmp_path)
    assert calls == [1]


def test_cli_keeps_freed_memory(monkeypatch):
    from rtdetr import cli

    calls = []
    monkeypatch.setattr(runtime, "keep_freed_memory", lambda: calls.append(1) or True)
    monkeypatch.setattr(runtime, "_malloc_kept", None)
    assert cli.main(["info"]) == 0
    assert calls == [1]


def test_trainer_amp_without_native_bf16_trains_fp32_with_one_warning(native_bf16, tmp_path, caplog):
    native_bf16(False)
    torch.set_flush_denormal(False)  # the Trainer's CPU set-up turns it back on
    try:
        with caplog.at_level(logging.WARNING):
            trainer, dtype = _train_step_dtype(tmp_path, amp=True)
        assert _denormals_flushed()
    finally:
        torch.set_flush_denormal(True)
    assert dtype == torch.float32 and trainer.amp_dtype is None and not trainer.cfg.amp
    assert len(_runtime_warnings(caplog)) == 1
    assert "float32" in _runtime_warnings(caplog)[0].getMessage()


def test_trainer_amp_force_keeps_bf16(native_bf16, tmp_path, caplog):
    native_bf16(False)
    with caplog.at_level(logging.WARNING):
        trainer, dtype = _train_step_dtype(tmp_path, amp=True, amp_force=True)
    assert dtype == torch.bfloat16 and trainer.cfg.amp
    assert not _runtime_warnings(caplog)


def test_trainer_amp_with_native_bf16_uses_bf16(native_bf16, tmp_path, caplog):
    native_bf16(True)
    with caplog.at_level(logging.WARNING):
        trainer, dtype = _train_step_dtype(tmp_path, amp=True)
    assert dtype == torch.bfloat16 and trainer.amp_dtype == torch.bfloat16
    assert not _runtime_warnings(caplog)


# ------------------------------------------------------------------------------------- CLI


def test_cli_flags():
    from rtdetr.cli import _train_config, build_parser

    parser = build_parser()
    forced = _train_config(parser.parse_args(["train", "--data", "d", "--amp-force"]))
    assert forced.amp and forced.amp_force
    plain = _train_config(parser.parse_args(["train", "--data", "d", "--amp"]))
    assert plain.amp and not plain.amp_force
    for command in (["predict", "x.png", "--model", "m"], ["benchmark", "--model", "m"], ["serve", "--model", "m"]):
        assert parser.parse_args(command).precision == "auto", command


_POOL_STARTED_FIRST = """
import torch
import rtdetr
from rtdetr.runtime import setup_cpu_runtime

torch.set_num_threads(2)
model = rtdetr.build_model("dfine_cspdarknet_n", num_classes=3)  # starts torch's thread pool
torch.set_flush_denormal(False)
denormal = torch.full((1 << 22,), 1, dtype=torch.int32).view(torch.float32)  # 1.4e-45, a bit pattern
before = int((denormal * 1.5).count_nonzero())
setup_cpu_runtime("cpu")
after = int((denormal * 1.5).count_nonzero())
print(before, after, torch.get_num_threads())
"""


def test_setup_flushes_denormals_on_threads_the_pool_started_before():
    """A Python user builds a model (which starts torch's two intra-op threads), then the
    set-up runs: the second thread must flush too, or half of every op stays slow."""
    if not torch.set_flush_denormal(True):
        pytest.skip("no flush-denormal support on this CPU")
    if sys.platform != "linux":
        pytest.skip("the pool's threads are reached through /proc/self/maps (Linux)")
    out = subprocess.run(
        [sys.executable, "-c", _POOL_STARTED_FIRST], capture_output=True, text=True, timeout=120, check=True
    ).stdout.split()
    before, after, threads = map(int, out[-3:])
    assert threads == 2
    assert before == 1 << 22  # no flush anywhere yet: every product stays denormal
    assert after == 0, f"{after} of {1 << 22} products stayed denormal: a pool thread does not flush"

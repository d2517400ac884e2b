"""--max-time under DDP: the ranks stop together even when their clocks disagree."""

from __future__ import annotations

import os
import time

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch.utils.data import Dataset

from .test_distributed import _free_port
from .test_engine import TinyBoxes, collate

HANG_TIMEOUT_S = 150


class SlowOnRankOne(Dataset):
    """Rank 1 loads every image slowly, so its steps (and its clock) lag rank 0's."""

    def __init__(self):
        self.base = TinyBoxes(n=16, size=64)

    def __len__(self):
        return len(self.base)

    def __getitem__(self, i):
        if dist.get_rank() == 1:
            time.sleep(0.1)
        return self.base[i]


def _worker(rank: int, port: int, out_dir: str) -> None:
    os.environ.update(
        RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE="2", MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port)
    )
    torch.set_num_threads(1)
    import rtdetr
    from rtdetr.train.engine import Trainer
    from rtdetr.train.train_config import TrainConfig

    torch.manual_seed(0)
    model = rtdetr.build_model("rtdetrv2_hgnetv2_n", num_classes=3, num_queries=10, num_denoising=10)
    cfg = TrainConfig(
        epochs=1000,
        batch_size=2,
        imgsz=64,
        warmup_iters=1,
        num_workers=0,
        out_dir=out_dir,
        progress=False,
        device="cpu",
        ema=False,
        max_time_s=2.0,
    )
    trainer = Trainer(model, SlowOnRankOne(), config=cfg, collate_fn=collate)
    if rank == 1:
        # Starts its budget 5 s after rank 0. Rank 0's first step waits for rank 1, so it ends
        # past rank 0's deadline but seconds before rank 1's: on their own clocks rank 0 would
        # stop after one step while rank 1 trains on, into collectives rank 0 never joins.
        time.sleep(5.0)
    trainer.fit()
    torch.save({"epoch": trainer.epoch, "step": trainer.step}, os.path.join(out_dir, f"rank{rank}.pt"))
    dist.destroy_process_group()


def test_max_time_stops_all_ranks_at_the_same_step(tmp_path):
    ctx = mp.start_processes(_worker, args=(_free_port(), str(tmp_path)), nprocs=2, join=False, start_method="spawn")
    deadline = time.monotonic() + HANG_TIMEOUT_S
    while not ctx.join(timeout=1):
        if time.monotonic() > deadline:
            for p in ctx.processes:
                if p.is_alive():
                    p.kill()
            pytest.fail(f"two-rank run with --max-time did not finish within {HANG_TIMEOUT_S} s (a rank hangs)")
    a, b = torch.load(tmp_path / "rank0.pt"), torch.load(tmp_path / "rank1.pt")
    assert a == b  # same epoch and optimizer step on both ranks
    assert a["epoch"] < 1000  # the budget, not the epoch count, ended the run
    assert torch.load(tmp_path / "last.pt", weights_only=False)["step"] == a["step"]

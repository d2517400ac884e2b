"""DDP on CPU (gloo) with two processes, including a rank whose images have no boxes
(with the dense encoder supervision on, whose normalizer is all-reduced too)."""

from __future__ import annotations

import os
import socket

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch.utils.data import Dataset

from .test_engine import TinyBoxes, collate


class RankSkewed(Dataset):
    """Rank 1 only ever sees images without boxes: its denoising and box losses vanish."""

    def __init__(self):
        self.base = TinyBoxes(n=8)

    def __len__(self):
        return len(self.base)

    def __getitem__(self, i):
        image, target = self.base[i]
        if dist.get_rank() == 1:
            target = {**target, "labels": target["labels"][:0], "boxes": target["boxes"][:0]}
        return image, target


def _worker(rank: int, port: int, out_dir: str) -> None:
    os.environ.update(
        RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE="2", MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port)
    )
    torch.set_num_threads(1)
    import rtdetr
    from rtdetr.train.engine import Trainer
    from rtdetr.train.train_config import TrainConfig

    torch.manual_seed(0)
    model = rtdetr.build_model("rtdetr_r18vd", num_classes=3, num_queries=20, num_denoising=20, dense_enc_outputs=True)
    cfg = TrainConfig(
        epochs=1, batch_size=2, warmup_iters=1, num_workers=0, out_dir=out_dir, progress=False, device="cpu", ema=False
    )
    trainer = Trainer(model, RankSkewed(), config=cfg, collate_fn=collate)
    assert trainer.dist.world_size == 2
    trainer.fit()
    # Parameters only: BN running statistics are per-rank (DDP re-broadcasts rank 0's at each forward).
    torch.save(dict(trainer.model.named_parameters()), os.path.join(out_dir, f"rank{rank}.pt"))
    dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_cpu_ranks_stay_in_sync_with_an_empty_rank(tmp_path):
    mp.start_processes(_worker, args=(_free_port(), str(tmp_path)), nprocs=2, join=True, start_method="spawn")
    a = torch.load(tmp_path / "rank0.pt")
    b = torch.load(tmp_path / "rank1.pt")
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    # only rank 0 wrote files; the run made its optimizer steps
    files = {p.name for p in tmp_path.iterdir()}
    assert {"last.pt", "metrics.jsonl", "results.csv", "rank0.pt", "rank1.pt"} <= files
    assert not any(".tmp" in f for f in files)
    assert torch.load(tmp_path / "last.pt", weights_only=False)["step"] == 2

"""``rtdetr val`` under torchrun: 2 gloo ranks each evaluate a share; results equal one process's."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch

from .test_sharded_predict import SRC, _free_port


def _key(p: dict) -> tuple:
    return (p["image_id"], p["category_id"], round(p["bbox"][0], 1), round(p["bbox"][1], 1), round(p["score"], 3))


def test_two_gloo_ranks_give_the_single_process_val_results(tmp_path):
    import rtdetr
    from rtdetr.cli import main
    from rtdetr.data import generate_synthetic_dataset

    generate_synthetic_dataset(tmp_path / "ds", num_train=1, num_val=5, imgsz=96, num_classes=3)
    torch.manual_seed(0)
    sd = rtdetr.build_model("rtdetrv2_hgnetv2_n", num_classes=3).state_dict()
    torch.save({"ema": {"module": sd}}, tmp_path / "w.pth")
    args = ["val", "--model", "rtdetrv2_hgnetv2_n", "--weights", str(tmp_path / "w.pth"), "--data"]
    args += [str(tmp_path / "ds"), "--imgsz", "320", "--device", "cpu", "--batch-size", "2", "--workers", "0"]
    assert main([*args, "--save-json", str(tmp_path / "single.json")]) == 0
    env = {**os.environ, "PYTHONPATH": str(SRC), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(_free_port())]
    cmd += ["-m", "rtdetr.cli", *args, "--save-json", str(tmp_path / "sharded.json")]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("| id | class") <= 1  # only rank 0 prints the table
    single = json.loads(Path(tmp_path / "single.json").read_text())
    sharded = json.loads(Path(tmp_path / "sharded.json").read_text())
    # The ranks batched other images together: near-tied scores may come out in another order.
    single, sharded = sorted(single, key=_key), sorted(sharded, key=_key)
    assert len(single) == len(sharded) == 5 * 300
    assert [(p["image_id"], p["category_id"]) for p in sharded] == [(p["image_id"], p["category_id"]) for p in single]
    a = np.array([p["bbox"] + [p["score"]] for p in single])
    b = np.array([p["bbox"] + [p["score"]] for p in sharded])
    np.testing.assert_allclose(b, a, atol=1e-3, rtol=0)

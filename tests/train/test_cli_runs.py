"""`rtdetr train` from the command line: run folders are never overwritten, one metrics table, clear errors."""

from __future__ import annotations

import logging

import pytest

from rtdetr.cli import main
from rtdetr.errors import UserError

SMALL = [
    "--model",
    "rtdetrv2_hgnetv2_n",
    "--imgsz",
    "64",
    "--batch-size",
    "4",
    "--workers",
    "0",
    "--epochs",
    "1",
    "--warmup-iters",
    "2",
    "--ema-warmup",
    "2",
    "--set",
    "num_queries=10",
    "--device",
    "cpu",
]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    from rtdetr.data import generate_synthetic_dataset

    return generate_synthetic_dataset(tmp_path_factory.mktemp("synth") / "d", num_train=4, num_val=2, imgsz=64)


def test_training_again_goes_to_a_new_folder_and_prints_one_metrics_table(data, tmp_path, capsys, caplog):
    run = tmp_path / "train"
    caplog.set_level(logging.INFO)
    assert main(["train", "--data", str(data), "--out", str(run), *SMALL]) == 0
    first = (run / "last.pt").read_bytes()
    out = capsys.readouterr().out
    # One table (the one `rtdetr val` prints), not a logged one and a printed one in two formats.
    tables = (out + caplog.text).count("|     AP |   AP50 |   AP75 |")
    assert tables == 1 and "| AP | AP50" not in out and "| circle" in out and f"checkpoints and logs: {run}" in out

    caplog.clear()
    assert main(["train", "--data", str(data), "--out", str(run), "--seed", "1", *SMALL]) == 0
    assert (run / "last.pt").read_bytes() == first  # the finished run is untouched
    assert (tmp_path / "train2" / "last.pt").is_file()
    assert f"checkpoints and logs: {tmp_path / 'train2'}" in capsys.readouterr().out
    assert f"this run goes to {tmp_path / 'train2'}" in caplog.text


def test_run_folder_numbering(tmp_path):
    from rtdetr.train.run_dir import next_run_dir

    run = tmp_path / "exp"
    assert next_run_dir(run) == run  # missing
    run.mkdir()
    assert next_run_dir(run) == run  # empty: nothing to lose
    (run / "last.pt").write_bytes(b"x")
    assert next_run_dir(run) == tmp_path / "exp2"
    (tmp_path / "exp2").mkdir()
    (tmp_path / "exp2" / "metrics.jsonl").write_text("{}\n")
    assert next_run_dir(run) == tmp_path / "exp3"
    assert next_run_dir(run, exist_ok=True) == run


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--batch-size", "0"], r"batch_size \(--batch-size\) must be an integer >= 1, got 0"),
        (["--epochs", "0"], r"epochs \(--epochs\) must be"),
        (["--max-time", "-5"], r"--max-time"),
        (["--resume"], r"--resume: no checkpoint at .*last.pt"),
        (["--imgsz", "64", "--set", "num_queries=300"], r"--imgsz 64 gives 20 encoder tokens.*--set num_queries=20"),
        (["--device", "gpu"], r"unknown device 'gpu'"),
    ],
)
def test_bad_training_flags_are_user_errors(data, tmp_path, flags, message):
    args = [
        "train",
        "--data",
        str(data),
        "--out",
        str(tmp_path / "run"),
        "--model",
        "rtdetrv2_hgnetv2_n",
        "--workers",
        "0",
        "--device",
        "cpu",
        *flags,
    ]
    if "--device" in flags:
        args = args[: args.index("--device")] + args[args.index("--device") + 2 :]  # the case's own --device only
    with pytest.raises(UserError, match=message):
        main(["-v", *args])  # -v: the exception itself (without it: its message and exit code 2)
    assert not (tmp_path / "run" / "last.pt").exists()


def test_an_empty_dataset_is_a_user_error(tmp_path):
    from rtdetr.data import generate_synthetic_dataset

    empty = generate_synthetic_dataset(tmp_path / "empty", num_train=0, num_val=1, imgsz=64)
    with pytest.raises(UserError, match=r"train split \(.*instances_train.json\) has no images"):
        main(["-v", "train", "--data", str(empty), "--out", str(tmp_path / "run"), *SMALL])

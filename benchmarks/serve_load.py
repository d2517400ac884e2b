"""Load test of ``rtdetr serve`` on loopback: dynamic batching against ``--max-batch 1``, same run.

    python -m benchmarks.serve_load                               # R18, 50 clients, 60 s per setting
    python -m benchmarks.serve_load --rounds 2 --duration 30      # alternate 8,1,8,1 (fairer on a busy machine)
    python -m benchmarks.serve_load --model rtdetrv2_hgnetv2_n --imgsz 320 --batches 8,4,1

For each ``--max-batch`` setting the script starts the service in a child process
(``python -m rtdetr.serve``, random weights unless ``--weights``), waits for
``/readyz`` (warm-up done) and runs ``--clients`` closed-loop clients, each posting
a 640x480 JPEG and waiting for the answer. After ``--ramp`` seconds (the queue
fills and the batches reach their steady size) it measures for ``--duration``
seconds: throughput (answers completed in the window / window), p50/p99 latency
of those answers, errors (anything but 200, target 0), the mean batch size (from
``/metrics``) and the server's peak RSS (``VmHWM``). Requests still in flight at
the end are abandoned and the server is stopped. With ``--rounds N`` the settings
alternate N times and are aggregated, so a machine whose load drifts (other
jobs) biases no setting.

Traffic goes to 127.0.0.1 only; every loop is bounded by time and by
``--max-requests``, and each child server is stopped before the next starts.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import os
import re
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import numpy as np
from PIL import Image, ImageDraw


@dataclass
class Totals:
    """One ``--max-batch`` setting, summed over rounds."""

    max_batch: int
    ok: int = 0
    errors: int = 0
    seconds: float = 0.0
    latencies: list[float] = field(default_factory=list)
    batch_sum: float = 0.0
    batch_count: float = 0.0
    peak_rss_mib: float = 0.0

    @property
    def throughput(self) -> float:
        return self.ok / self.seconds if self.seconds > 0 else 0.0

    @property
    def mean_batch(self) -> float:
        return self.batch_sum / self.batch_count if self.batch_count else float("nan")

    def percentile(self, q: float) -> float:
        return float(np.percentile(np.asarray(self.latencies), q)) if self.latencies else float("nan")


def synthetic_jpegs(n: int, width: int = 640, height: int = 480, seed: int = 0) -> list[bytes]:
    """Photo-like test images: a gradient background with a few filled shapes."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        ramp = np.linspace(0, 1, width)[None, :, None] * rng.integers(60, 200, size=3)
        image = Image.fromarray(np.broadcast_to(ramp, (height, width, 3)).astype(np.uint8))
        draw = ImageDraw.Draw(image)
        for _ in range(int(rng.integers(2, 6))):
            x0, y0 = int(rng.integers(0, width - 80)), int(rng.integers(0, height - 80))
            x1, y1 = x0 + int(rng.integers(30, 200)), y0 + int(rng.integers(30, 200))
            colour = tuple(int(c) for c in rng.integers(0, 256, size=3))
            (draw.ellipse if rng.random() < 0.5 else draw.rectangle)((x0, y0, x1, y1), fill=colour)
        buffer = io.BytesIO()
        image.save(buffer, format="JPEG", quality=90)
        out.append(buffer.getvalue())
    return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def peak_rss_mib(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


def start_server(args: argparse.Namespace, max_batch: int, port: int, log_path: Path) -> subprocess.Popen:
    cmd = [
        sys.executable,
        "-m",
        "rtdetr.serve",
        "--model",
        args.model,
        "--device",
        "cpu",
        "--port",
        str(port),
        "--max-batch",
        str(max_batch),
        "--max-wait-ms",
        str(args.max_wait_ms),
        "--queue-size",
        str(args.queue_size),
        "--no-access-log",
    ]
    if args.imgsz:
        cmd += ["--imgsz", str(args.imgsz)]
    if args.weights:
        cmd += ["--weights", args.weights]
    if args.threads:
        cmd += ["--workers-threads", str(args.threads)]
    log = open(log_path, "w")  # noqa: SIM115 - closed by stop_server
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "RTDETR_API_KEY": ""})
    proc.log_file = log  # type: ignore[attr-defined]
    return proc


def wait_ready(proc: subprocess.Popen, url: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}; see {proc.log_file.name}")  # type: ignore[attr-defined]
        try:
            if httpx.get(f"{url}/readyz", timeout=5).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.5)
    raise TimeoutError(f"server not ready after {timeout:.0f} s")


def stop_server(proc: subprocess.Popen) -> None:
    """SIGINT (graceful), then SIGKILL: abandoned requests need not be served."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    proc.log_file.close()  # type: ignore[attr-defined]


async def load(
    url: str, images: list[bytes], clients: int, ramp: float, duration: float, max_requests: int
) -> tuple[int, int, list[float]]:
    """(ok, errors, latencies) of the answers completed in the measurement window."""
    records: list[tuple[float, float, bool]] = []  # (done at, latency, ok)
    issued = 0
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=httpx.Timeout(600.0)) as client:
        start = time.perf_counter()
        window = (start + ramp, start + ramp + duration)

        async def worker(i: int) -> None:
            nonlocal issued
            k = i
            while time.perf_counter() < window[1] and issued < max_requests:
                issued += 1
                t = time.perf_counter()
                try:
                    res = await client.post(
                        "/v1/detect", content=images[k % len(images)], headers={"content-type": "image/jpeg"}
                    )
                    ok = res.status_code == 200
                except httpx.HTTPError:
                    ok = False
                done = time.perf_counter()
                records.append((done, done - t, ok))
                k += clients

        tasks = [asyncio.create_task(worker(i)) for i in range(clients)]
        await asyncio.wait(tasks, timeout=window[1] - time.perf_counter())
        for task in tasks:  # in flight at the end of the window: abandoned
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    inside = [r for r in records if window[0] <= r[0] <= window[1]]
    latencies = [lat for _, lat, ok in inside if ok]
    return len(latencies), sum(1 for _, _, ok in inside if not ok), latencies


def batch_stats(url: str) -> tuple[float, float]:
    """(sum, count) of the batch-size histogram."""
    text = httpx.get(f"{url}/metrics", timeout=30).text
    total = re.search(r"^rtdetr_batch_size_sum (\S+)$", text, re.M)
    count = re.search(r"^rtdetr_batch_size_count (\S+)$", text, re.M)
    return (float(total.group(1)), float(count.group(1))) if total and count else (0.0, 0.0)


def run_once(args: argparse.Namespace, totals: Totals, images: list[bytes], round_index: int) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log_path = Path(args.log_dir) / f"server_batch{totals.max_batch}_round{round_index}.log"
    proc = start_server(args, totals.max_batch, port, log_path)
    try:
        wait_ready(proc, url, args.ready_timeout)
        ok, errors, latencies = asyncio.run(
            load(url, images, args.clients, args.ramp, args.duration, args.max_requests)
        )
        batch_sum, batch_count = batch_stats(url)
        totals.peak_rss_mib = max(totals.peak_rss_mib, peak_rss_mib(proc.pid))
    finally:
        stop_server(proc)
    totals.ok += ok
    totals.errors += errors
    totals.seconds += args.duration
    totals.latencies += latencies
    totals.batch_sum += batch_sum
    totals.batch_count += batch_count
    print(f"   {ok} answers, {errors} errors in the {args.duration:.0f} s window ({ok / args.duration:.2f} img/s)")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="rtdetr_r18vd")
    p.add_argument("--weights", default=None)
    p.add_argument("--imgsz", type=int, default=None, help="model input side (default: the model's, 640)")
    p.add_argument("--batches", default="8,1", help="--max-batch settings to compare, in run order")
    p.add_argument("--rounds", type=int, default=1, help="alternate the settings this many times")
    p.add_argument("--clients", type=int, default=50)
    p.add_argument("--ramp", type=float, default=20.0, help="seconds of load before the window opens")
    p.add_argument("--duration", type=float, default=60.0, help="measurement window per setting and round (s)")
    p.add_argument("--max-requests", type=int, default=100_000, help="hard cap on requests per run")
    p.add_argument("--max-wait-ms", type=float, default=5.0)
    p.add_argument("--queue-size", type=int, default=64, help="keep >= --clients for zero 503s")
    p.add_argument("--threads", type=int, default=None, help="server torch threads (default: torch's)")
    p.add_argument("--ready-timeout", type=float, default=600.0)
    p.add_argument("--log-dir", default="runs/serve_load")
    args = p.parse_args()
    Path(args.log_dir).mkdir(parents=True, exist_ok=True)
    totals = [Totals(int(b)) for b in args.batches.split(",")]
    images = synthetic_jpegs(16)

    print(
        f"model {args.model} (imgsz {args.imgsz or 'default'}), {args.clients} clients, {args.ramp:.0f} s ramp + "
        f"{args.duration:.0f} s window per setting x {args.rounds} round(s), {os.cpu_count()} CPUs, 640x480 JPEGs"
    )
    for round_index in range(args.rounds):
        for t in totals:
            print(f"-- round {round_index + 1}, max-batch {t.max_batch}: starting server, warming up ...", flush=True)
            run_once(args, t, images, round_index)

    print()
    print(
        "| max-batch | answers | throughput (img/s) | p50 latency (s) | p99 latency (s) | errors | mean batch | peak RSS (MiB) |"
    )
    print("|---:|---:|---:|---:|---:|---:|---:|---:|")
    for t in totals:
        print(
            f"| {t.max_batch} | {t.ok} | {t.throughput:.2f} | {t.percentile(50):.2f} | {t.percentile(99):.2f} | "
            f"{t.errors} | {t.mean_batch:.2f} | {t.peak_rss_mib:.0f} |"
        )
    baseline = next((t for t in totals if t.max_batch == 1), None)
    if baseline and baseline.throughput > 0:
        for t in totals:
            if t.max_batch != 1:
                verdict = "beats" if t.throughput > baseline.throughput else "does NOT beat"
                print(f"max-batch {t.max_batch} {verdict} max-batch 1: {t.throughput / baseline.throughput:.2f}x")
    if any(t.errors for t in totals):
        print(f"errors: {sum(t.errors for t in totals)} (server logs in {args.log_dir})")
    return 1 if any(t.errors for t in totals) else 0


if __name__ == "__main__":
    sys.exit(main())

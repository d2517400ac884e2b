"""GPU numbers in one run: training images/s and inference latency/throughput, with transformers beside them.

    python -m benchmarks.gpu                      # the full table (a few minutes on an H100/H200)
    python -m benchmarks.gpu --device cpu --quick # smoke test of the script itself
    python -m benchmarks.gpu --train-only --layouts cl,cl-compiled --amps fp16  # does --compile pay?

Training: a full step (forward, loss with Hungarian matching, backward, AdamW) at
640 px, batch 16, AMP (fp16 autocast + GradScaler as the reference trains, and
bf16 autocast), random images with 6 boxes each.

Inference (deploy-fused model, eval mode): batch 1 latency and batch 32
throughput, model only and end to end (model + top-K postprocess, from a
preprocessed batch on the GPU), fp32 and fp16 (weights in half), eager and
replayed as a CUDA graph. transformers' ``RTDetrForObjectDetection`` with the
same R18 configuration runs in the same process for the ratios.

Times are CUDA-event medians after warm-up.
"""

from __future__ import annotations

import argparse
import itertools
import json
import statistics
import time
from pathlib import Path

import torch

import rtdetr
from rtdetr.nn.end_to_end import EndToEndDetector
from rtdetr.train import HungarianMatcher, RTDETRCriterion, total_loss
from rtdetr.train.optim import build_optimizer


def _timeit(fn, device: torch.device, warmup: int, iters: int) -> float:
    """Median seconds of ``fn()``."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(iters):
        if device.type == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end) / 1e3)
        else:
            t = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t)
    return statistics.median(times)


def _targets(batch: int, device: torch.device) -> list[dict]:
    g = torch.Generator().manual_seed(0)
    return [
        {
            "labels": torch.randint(0, 80, (6,), generator=g).to(device),
            "boxes": (torch.rand(6, 4, generator=g) * 0.4 + 0.3).to(device),
        }
        for _ in range(batch)
    ]


TRAIN_LAYOUTS = {  # name: (label, channels_last, compiled)
    "nchw": ("NCHW", False, False),
    "cl": ("channels-last", True, False),
    "cl-compiled": ("channels-last compiled", True, True),  # TrainConfig.compile
}


def train_rows(
    presets: list[str],
    device: torch.device,
    imgsz: int,
    batch: int,
    steps: int,
    hf: bool,
    layouts: tuple[str, ...] = ("nchw", "cl"),
    amps: tuple[str, ...] = ("fp16", "bf16"),
) -> list[dict]:
    """Ours in the given memory formats (the trainer defaults to channels-last; "cl-compiled"
    also compiles backbone + encoder as ``TrainConfig.compile`` does) and AMP dtypes."""
    rows = []
    x = torch.rand(batch, 3, imgsz, imgsz, device=device)
    targets = _targets(batch, device)
    dtypes = {"fp16": torch.float16, "bf16": torch.bfloat16}
    amps = [(a, dtypes[a]) for a in amps] if device.type == "cuda" else [("bf16", torch.bfloat16)]
    layouts = [TRAIN_LAYOUTS[name] for name in layouts]
    for preset in presets:
        for (amp_name, dtype), (layout, channels_last, compiled) in itertools.product(amps, layouts):
            torch.manual_seed(0)
            model = rtdetr.build_model(preset).to(device).train()
            if channels_last:
                model = model.to(memory_format=torch.channels_last)
            if compiled:
                model.compile_static_parts()
            images = x.contiguous(memory_format=torch.channels_last) if channels_last else x
            crit = RTDETRCriterion(matcher=HungarianMatcher(), num_classes=80)
            opt = build_optimizer(model)
            scaler = torch.amp.GradScaler(device.type, enabled=dtype == torch.float16)

            def step():
                with torch.autocast(device.type, dtype=dtype):
                    out = model(images, targets)
                loss = total_loss(crit(out, targets))
                opt.zero_grad(set_to_none=True)
                scaler.scale(loss).backward()
                scaler.unscale_(opt)
                torch.nn.utils.clip_grad_norm_(model.parameters(), 0.1)
                scaler.step(opt)
                scaler.update()

            sec = _timeit(step, device, warmup=3, iters=steps)
            rows.append(
                {
                    "what": "train",
                    "impl": f"ours {preset} {layout}",
                    "amp": amp_name,
                    "batch": batch,
                    "img_s": batch / sec,
                }
            )
            model = opt = None  # free the device memory before the next variant
        if hf and preset == "rtdetr_r18vd":
            from benchmarks.hf_reference import hf_rtdetr

            hf_model = hf_rtdetr(preset).to(device).train()
            hf_opt = torch.optim.AdamW(hf_model.parameters(), lr=1e-4)
            labels = [{"class_labels": t["labels"], "boxes": t["boxes"]} for t in targets]
            for amp_name, dtype in amps:
                scaler = torch.amp.GradScaler(device.type, enabled=dtype == torch.float16)

                def hf_step():
                    with torch.autocast(device.type, dtype=dtype):
                        loss = hf_model(pixel_values=x, labels=labels).loss
                    hf_opt.zero_grad(set_to_none=True)
                    scaler.scale(loss).backward()
                    scaler.step(hf_opt)
                    scaler.update()

                sec = _timeit(hf_step, device, warmup=3, iters=steps)
                rows.append(
                    {
                        "what": "train",
                        "impl": "transformers r18vd",
                        "amp": amp_name,
                        "batch": batch,
                        "img_s": batch / sec,
                    }
                )
            del hf_model, hf_opt
    return rows


def _graphed(fn, inputs: tuple):
    """Capture ``fn(*inputs)`` as a CUDA graph; returns a replay function."""
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        for _ in range(3):
            fn(*inputs)
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        fn(*inputs)
    return graph.replay


def infer_rows(
    presets: list[str], device: torch.device, imgsz: int, batches: list[int], iters: int, hf: bool
) -> list[dict]:
    rows = []
    dtypes = [("fp32", torch.float32), ("fp16", torch.float16)] if device.type == "cuda" else [("fp32", torch.float32)]
    for preset in presets + (["transformers r18vd"] if hf else []):
        for prec, dtype in dtypes:
            if preset.startswith("transformers"):
                from benchmarks.hf_reference import hf_rtdetr

                # transformers' model is not half-safe (fp32 buffers meet fp16 weights), so it
                # runs fp32 weights under autocast in "fp16"; its forward makes CPU tensors,
                # which CUDA graph capture refuses (reported as such).
                net = hf_rtdetr("rtdetr_r18vd").to(device).eval()

                def model_only(images, sizes, net=net, dtype=dtype):
                    with torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32):
                        return net(pixel_values=images).logits

                end_to_end = None
            else:
                model = rtdetr.build_model(preset).deploy().to(device, dtype)
                e2e = EndToEndDetector(model, rtdetr.build_postprocessor(model)).to(device)

                def model_only(images, sizes, model=model):
                    return model(images)["pred_logits"]

                def end_to_end(images, sizes, e2e=e2e):
                    return e2e(images, sizes)

            for batch in batches:
                images = torch.rand(batch, 3, imgsz, imgsz, device=device, dtype=dtype)
                sizes = torch.tensor([[imgsz, imgsz]] * batch, device=device)
                variants = [("model", model_only)] + ([("end-to-end", end_to_end)] if end_to_end else [])
                for scope, fn in variants:
                    for mode in ("eager", "cuda-graph") if device.type == "cuda" else ("eager",):
                        with torch.inference_mode():
                            try:
                                run = (
                                    (lambda fn=fn: fn(images, sizes))
                                    if mode == "eager"
                                    else _graphed(fn, (images, sizes))
                                )
                                sec = _timeit(run, device, warmup=5, iters=iters)
                                err = None
                            except Exception as exc:  # a variant that cannot run is reported, not fatal
                                sec, err = float("nan"), f"{type(exc).__name__}: {exc}"[:120]
                        rows.append(
                            {
                                "what": "infer",
                                "impl": preset,
                                "precision": prec,
                                "batch": batch,
                                "scope": scope,
                                "mode": mode,
                                "ms": sec * 1e3,
                                "img_s": batch / sec,
                                "error": err,
                            }
                        )
            torch.cuda.empty_cache() if device.type == "cuda" else None
    return rows


def print_tables(rows: list[dict]) -> None:
    train = [r for r in rows if r["what"] == "train"]
    if train:
        print("\n| training (fwd+loss+bwd+AdamW) | AMP | batch | img/s |\n|---|---|---:|---:|")
        for r in train:
            print(f"| {r['impl']} | {r['amp']} | {r['batch']} | {r['img_s']:.1f} |")
    infer = [r for r in rows if r["what"] == "infer"]
    if infer:
        ref = {
            (r["precision"], r["batch"]): r["ms"]
            for r in infer
            if r["impl"].startswith("transformers") and r["mode"] == "eager"
        }
        print(
            "\n| inference | precision | batch | scope | mode | ms / batch | img/s | vs transformers eager (same precision, batch) |"
        )
        print("|---|---|---:|---|---|---:|---:|---:|")
        for r in infer:
            base = ref.get((r["precision"], r["batch"]))
            ratio = f"{r['ms'] / base:.2f}x" if base and r["ms"] == r["ms"] else ""
            note = f" ({r['error']})" if r["error"] else ""
            print(
                f"| {r['impl']} | {r['precision']} | {r['batch']} | {r['scope']} | {r['mode']} | {r['ms']:.2f} | {r['img_s']:.1f} | {ratio}{note} |"
            )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda")
    p.add_argument("--quick", action="store_true", help="tiny sizes: checks the script, not the hardware")
    p.add_argument("--no-hf", action="store_true", help="skip transformers")
    p.add_argument("--train-presets", default="rtdetr_r18vd,rtdetr_r50vd")
    p.add_argument(
        "--infer-presets", default="rtdetr_r18vd,rtdetr_r50vd,rtdetr_hgnetv2_l,rtdetrv2_hgnetv2_s,rtdetrv2_hgnetv2_n"
    )
    p.add_argument("--json", default=None, help="also write the rows here")
    p.add_argument("--train-only", action="store_true", help="skip the inference tables")
    p.add_argument(
        "--layouts", default="nchw,cl", help=f"training variants of ours, comma list of {list(TRAIN_LAYOUTS)}"
    )
    p.add_argument("--amps", default="fp16,bf16", help="training AMP dtypes (CUDA), comma list")
    args = p.parse_args()
    device = torch.device(args.device)
    torch.backends.cudnn.benchmark = True
    torch.set_flush_denormal(True)
    if device.type == "cuda":
        print(f"device: {torch.cuda.get_device_name(device)}, torch {torch.__version__}, CUDA {torch.version.cuda}")
    imgsz, batch, steps, batches, iters = (640, 16, 20, [1, 32], 50) if not args.quick else (128, 2, 2, [1, 2], 2)
    t0 = time.time()
    rows = train_rows(
        args.train_presets.split(","),
        device,
        imgsz,
        batch,
        steps,
        hf=not args.no_hf,
        layouts=tuple(args.layouts.split(",")),
        amps=tuple(args.amps.split(",")),
    )
    print_tables(rows)
    if not args.train_only:
        rows += infer_rows(args.infer_presets.split(","), device, imgsz, batches, iters, hf=not args.no_hf)
        print_tables([r for r in rows if r["what"] == "infer"])
    print(f"\ntotal {time.time() - t0:.0f} s")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()

"""Tables (markdown) and plots (PNG) of the NMS study, from its ``results.json`` dict.

``write_report(results, out)`` writes ``tables.md`` and, when matplotlib is installed,
``boxes_vs_conf.png``, ``nms_time.png`` and ``ap_vs_latency.png`` (AP against end-to-end
latency, with the latency table drawn beside the plot).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

__all__ = ["markdown_tables", "write_report"]

DPI = 100  # enough to read every label; keeps the committed PNGs small


def _f(v: Any, fmt: str = ".3f") -> str:
    return "-" if v is None else format(v, fmt)


def _thr(v: float | None) -> str:
    return "none" if v is None else f"{v:g}"


def markdown_tables(res: dict[str, Any]) -> str:
    """All tables of the study as one markdown document."""
    m = res["machine"]
    lines = [
        "# NMS study: tables",
        "",
        f"Command: `{res['command']}`",
        "",
        (
            f"Machine: {m['device_name']}; torch {m['torch']}, torchvision {m['torchvision']}, "
            f"ultralytics {m.get('ultralytics', '-')}; {m['threads']} torch threads for every timing; "
            f"load average before / after: {m['load_before']} / {m['load_after']}. "
            f"Total wall time: {res['wall_s'] / 60:.1f} min."
        ),
        "",
    ]
    if res.get("training"):
        lines += [
            "## Training (from scratch, same wall-clock budget)",
            "",
            "| model | budget (min) | epochs | AP at the end of training |",
            "|---|---:|---:|---:|",
        ]
        for t in res["training"]:
            lines.append(f"| {t['model']} | {t['budget_min']:g} | {_f(t.get('epochs'), '.1f')} | {_f(t.get('AP'))} |")
        lines.append("")

    counts = res["box_counts"]
    thr = counts["table_thresholds"]
    lines += [
        "## (a) Boxes per image above the confidence threshold",
        "",
        (
            "Mean over the validation images. YOLO pairs: (anchor, class) pairs above the threshold, "
            "the boxes that enter multi-label NMS; anchors: anchors whose best class is above it. "
            "RT-DETR: (query, class) pairs of its output (the top-K postprocessor needs no NMS)."
        ),
        "",
        "| detector | count | " + " | ".join(f"> {t:g}" for t in thr) + " |",
        "|---|---|" + "---:|" * len(thr),
    ]
    for name, c in counts["detectors"].items():
        for key in ("pairs", "anchors"):
            vals = [c[key][c["thresholds"].index(t)] for t in thr]
            label = {"pairs": "pairs", "anchors": "anchors" if c["kind"] == "yolo" else "queries"}[key]
            lines.append(f"| {name} | {label} | " + " | ".join(f"{v:.1f}" for v in vals) + " |")
    lines.append("")

    for name, rows in res["nms_grid"].items():
        lines += [
            f"## (b) {name}: NMS time and AP per (confidence, IoU) threshold",
            "",
            (
                "Per image: filter = threshold + box conversion, NMS = torchvision `batched_nms` + top 300; "
                "medians over repetitions, then the median (and mean) over images. AP on the same images."
            ),
            "",
            "| conf | IoU | boxes in | boxes kept | filter (ms) | NMS (ms) | total median (ms) | total mean (ms) | AP | AP50 |",
            "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for r in rows:
            lines.append(
                f"| {r['conf']:g} | {r['iou']:g} | {r['boxes_in']:.0f} | {r['boxes_kept']:.0f} | "
                f"{r['filter']['median_ms']:.3f} | {r['nms']['median_ms']:.3f} | {r['total']['median_ms']:.3f} | "
                f"{r['total']['mean_ms']:.3f} | {r['AP']:.3f} | {r['AP50']:.3f} |"
            )
        lines.append("")

    lines += [
        "## (b') RT-DETR: postprocess time and AP against the score threshold alone",
        "",
        "sigmoid -> top-K over (query, class) pairs -> score filter; no IoU threshold exists.",
        "",
        "| model | score threshold | boxes kept | postprocess median (ms) | AP | AP50 |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for r in res["ours_sweep"]:
        lines.append(
            f"| {r['model']} | {_thr(r['score_threshold'])} | {r['boxes_kept']:.1f} | "
            f"{r['post']['median_ms']:.3f} | {r['AP']:.3f} | {r['AP50']:.3f} |"
        )
    lines.append("")

    lines += [
        "## (c) End-to-end latency, batch 1 (preprocess + model + NMS or top-K postprocess)",
        "",
        (
            "Medians over every timed call (all images x all rounds); p90 of the total. "
            "AP with exactly this postprocessing; '-' = latency only (random weights: a DETR's "
            "compute does not depend on its weights; YOLO's NMS does, so no untrained YOLO is timed)."
        ),
        "",
        (
            "| detector | postprocess | AP | AP50 | preprocess (ms) | model (ms) | postprocess (ms) | "
            "total median (ms) | total p90 (ms) | FPS (1 / median) |"
        ),
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in res["e2e"]:
        t = r["latency"]
        lines.append(
            f"| {r['name']} | {r['setting']} | {_f(r.get('AP'))} | {_f(r.get('AP50'))} | "
            f"{t['pre']['median_ms']:.2f} | {t['model']['median_ms']:.2f} | {t['post']['median_ms']:.2f} | "
            f"{t['total']['median_ms']:.2f} | {t['total']['p90_ms']:.2f} | {1e3 / t['total']['median_ms']:.1f} |"
        )
    return "\n".join(lines) + "\n"


def _plot_boxes(res: dict[str, Any], path: Path, plt: Any) -> None:
    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    for name, c in res["box_counts"]["detectors"].items():
        line = ax.plot(c["thresholds"], c["pairs"], "-o", ms=3, label=f"{name}: (box, class) pairs")[0]
        unit = "anchors" if c["kind"] == "yolo" else "queries"
        ax.plot(c["thresholds"], c["anchors"], "--", color=line.get_color(), label=f"{name}: {unit} (best class)")
    for t in res["box_counts"]["table_thresholds"]:
        ax.axvline(t, color="0.85", lw=0.8, zorder=0)
    ax.set_yscale("symlog", linthresh=1)  # log above 1 box, linear down to 0
    ax.set_ylim(bottom=0)
    ax.set(
        xscale="log",
        xlabel="confidence threshold",
        ylabel="boxes per image (mean)",
        title="Boxes above the confidence threshold",
    )
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)
    plt.close(fig)


def _plot_nms(res: dict[str, Any], path: Path, plt: Any) -> None:
    grids = res["nms_grid"]
    ours = [r for r in res["ours_sweep"] if r["score_threshold"] is not None]
    ours_name = ours[0]["model"] if ours else None
    ours = [r for r in ours if r["model"] == ours_name]
    fig, axes = plt.subplots(len(grids), 3, figsize=(15, 4.2 * len(grids)), squeeze=False)
    for (name, rows), (a_conf, a_iou, a_ap) in zip(grids.items(), axes):
        confs = sorted({r["conf"] for r in rows})
        ious = sorted({r["iou"] for r in rows})
        at = {(r["conf"], r["iou"]): r for r in rows}
        for iou in ious:
            a_conf.plot(confs, [at[c, iou]["total"]["median_ms"] for c in confs], "-o", label=f"IoU {iou:g}")
            a_ap.plot(confs, [at[c, iou]["AP"] for c in confs], "-o", label=f"{name}, IoU {iou:g}")
        for c in confs:
            a_iou.plot(ious, [at[c, iou]["total"]["median_ms"] for iou in ious], "-o", label=f"conf {c:g}")
        if ours:
            xs = [r["score_threshold"] for r in ours]
            a_conf.plot(xs, [r["post"]["median_ms"] for r in ours], "k--s", ms=4, label=f"{ours_name} top-K")
            a_ap.plot(xs, [r["AP"] for r in ours], "k--s", ms=4, label=f"{ours_name} (score threshold)")
        a_conf.set(
            xscale="log",
            xlabel="confidence threshold",
            ylabel="ms per image (median)",
            title=f"{name}: NMS time vs confidence threshold",
        )
        a_iou.set(xlabel="IoU threshold", ylabel="ms per image (median)", title=f"{name}: NMS time vs IoU threshold")
        a_ap.set(xscale="log", xlabel="confidence / score threshold", ylabel="COCO AP", title="AP at each setting")
        a_ap.set_ylim(bottom=0)
        a_conf.set_ylim(bottom=0)
        a_iou.set_ylim(bottom=0)
        for a in (a_conf, a_iou, a_ap):
            a.grid(alpha=0.3, which="both")
            a.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)
    plt.close(fig)


def _plot_ap_latency(res: dict[str, Any], path: Path, plt: Any) -> None:
    rows = res["e2e"]
    fig = plt.figure(figsize=(15, 5.2))
    ax = fig.add_axes((0.05, 0.12, 0.37, 0.76))
    colors = {"rtdetr": "tab:blue", "yolo": "tab:red"}
    for i, r in enumerate(rows, 1):  # points carry their table row number: long labels would overlap
        t = r["latency"]["total"]["median_ms"]
        untrained = r.get("AP") is None
        y = 0.0 if untrained else r["AP"]
        marker = "x" if untrained else ("o" if r["kind"] == "rtdetr" else "s")
        ax.plot(t, y, marker, color="0.4" if untrained else colors[r["kind"]], ms=7)
        ax.annotate(str(i), (t, y), textcoords="offset points", xytext=(4, 3 + 7 * (i % 2)), fontsize=8)
    for kind, marker, label in (("rtdetr", "o", "RT-DETR (ours), top-K, no NMS"), ("yolo", "s", "YOLO + NMS")):
        ax.plot([], [], marker, color=colors[kind], label=label)
    ax.plot([], [], "x", color="0.4", label="latency only (random weights), drawn at AP 0")
    xmax = max(r["latency"]["total"]["median_ms"] for r in rows)
    ax.set_xlim(0, xmax * 1.12)
    ax.set(
        xlabel="end-to-end latency per image, median (ms)",
        ylabel="COCO AP (synthetic val)",
        title=f"AP vs end-to-end latency, batch 1\n{res['machine']['device_name']}",
    )
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    tab = fig.add_axes((0.44, 0.05, 0.55, 0.9))
    tab.axis("off")
    cells = [
        [
            str(i),
            r["name"],
            r["setting_short"],
            "-" if r.get("AP") is None else f"{r['AP']:.3f}",
            f"{r['latency']['pre']['median_ms']:.2f}",
            f"{r['latency']['model']['median_ms']:.2f}",
            f"{r['latency']['post']['median_ms']:.2f}",
            f"{r['latency']['total']['median_ms']:.2f}",
        ]
        for i, r in enumerate(rows, 1)
    ]
    cols = ["#", "detector", "postprocess", "AP", "pre ms", "model ms", "post ms", "total ms"]
    table = tab.table(cellText=cells, colLabels=cols, loc="center", cellLoc="left")
    table.auto_set_font_size(False)
    table.set_fontsize(8)
    table.auto_set_column_width(list(range(len(cols))))
    table.scale(1, 1.5)
    fig.savefig(path, dpi=DPI, bbox_inches="tight")  # the table may reach past the figure edge
    plt.close(fig)


def write_report(res: dict[str, Any], out: Path) -> list[Path]:
    """Write tables.md and the PNG plots under ``out``; returns the written paths."""
    out.mkdir(parents=True, exist_ok=True)
    written = [out / "tables.md"]
    written[0].write_text(markdown_tables(res))
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:  # plots are optional; the tables are the record
        return written
    for name, fn in (
        ("boxes_vs_conf.png", _plot_boxes),
        ("nms_time.png", _plot_nms),
        ("ap_vs_latency.png", _plot_ap_latency),
    ):
        fn(res, out / name, plt)
        written.append(out / name)
    return written

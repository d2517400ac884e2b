"""Tests for rtdetr.eval: COCO metrics on hand-built cases with known answers."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from rtdetr.eval import SUMMARY_KEYS, CocoEvaluator, available_backends, coco_eval, format_metrics_table

BACKENDS = available_backends()
R = 101  # COCO recall thresholds


def make_gt() -> dict:
    """Two images, categories 1 (cat) and 3 (dog) plus 5 (bird) without gt; one box per size range."""
    boxes = [  # (image_id, category_id, xywh)
        (1, 1, [10, 10, 20, 20]),  # small (400 px^2)
        (1, 3, [100, 100, 50, 50]),  # medium
        (2, 1, [50, 60, 200, 150]),  # large
        (2, 3, [300, 200, 120, 100]),  # large
    ]
    return {
        "images": [{"id": i, "width": 640, "height": 480, "file_name": f"{i}.jpg"} for i in (1, 2, 3)],
        "categories": [{"id": 1, "name": "cat"}, {"id": 3, "name": "dog"}, {"id": 5, "name": "bird"}],
        "annotations": [
            {"id": k, "image_id": img, "category_id": cat, "bbox": b, "area": b[2] * b[3], "iscrowd": 0}
            for k, (img, cat, b) in enumerate(boxes, 1)
        ],
    }


def gt_as_predictions(gt: dict, keep=lambda ann: True) -> list[dict]:
    """Perfect predictions (xyxy tensors) for the gt annotations selected by ``keep``; every image listed."""
    preds = []
    for img in gt["images"]:
        anns = [a for a in gt["annotations"] if a["image_id"] == img["id"] and keep(a)]
        xyxy = [[x, y, x + w, y + h] for x, y, w, h in (a["bbox"] for a in anns)]
        preds.append(
            {
                "image_id": img["id"],
                "boxes": torch.tensor(xyxy, dtype=torch.float32).reshape(-1, 4),
                "scores": torch.full((len(anns),), 0.9),
                "labels": torch.tensor([a["category_id"] for a in anns], dtype=torch.int64),
            }
        )
    return preds


@pytest.fixture(params=BACKENDS)
def backend(request) -> str:
    return request.param


def test_perfect_predictions(backend, capsys):
    gt = make_gt()
    ev = CocoEvaluator(gt, backend=backend)
    ev.update(gt_as_predictions(gt))
    m = ev.summarize()
    for key in SUMMARY_KEYS:
        assert m[key] == pytest.approx(1.0), key
    assert capsys.readouterr().out == ""  # backend output is captured, not printed


def test_shifted_box_iou_between_050_and_075(backend):
    gt = {
        "images": [{"id": 7, "width": 300, "height": 300}],
        "categories": [{"id": 2, "name": "x"}],
        "annotations": [{"id": 1, "image_id": 7, "category_id": 2, "bbox": [0, 0, 100, 100]}],
    }  # no area/iscrowd
    ev = CocoEvaluator(gt, backend=backend)
    # IoU = 100*100 / (100*150) = 2/3: matched at thresholds 0.50, 0.55, 0.60, 0.65 only.
    ev.update(
        [
            {
                "image_id": 7,
                "boxes": np.array([[0.0, 0.0, 100.0, 150.0]]),
                "scores": np.array([0.8]),
                "labels": np.array([2]),
            }
        ]
    )
    m = ev.compute()
    assert m["AP50"] == pytest.approx(1.0)
    assert m["AP75"] == pytest.approx(0.0)
    assert m["AP"] == pytest.approx(0.4)
    assert m["APm"] == -1.0 and m["APs"] == -1.0  # no gt in those ranges: undefined


def test_half_detected_with_top_scoring_false_positive(backend):
    gt = {
        "images": [{"id": 1, "width": 500, "height": 500}],
        "categories": [{"id": 1, "name": "a"}],
        "annotations": [
            {"id": i + 1, "image_id": 1, "category_id": 1, "bbox": [i * 100, 0, 50, 50], "area": 2500, "iscrowd": 0}
            for i in range(4)
        ],
    }
    ev = CocoEvaluator(gt, backend=backend)
    boxes = torch.tensor([[0, 300, 50, 350], [0, 0, 50, 50], [100, 0, 150, 50]], dtype=torch.float64)
    ev.update(
        [
            {
                "image_id": 1,
                "boxes": boxes,
                "scores": torch.tensor([0.9, 0.8, 0.7], dtype=torch.float64),
                "labels": torch.tensor([1, 1, 1]),
            }
        ]
    )
    m = ev.summarize()
    # FP then 2 TPs: recall reaches 0.5 with interpolated precision 2/3 at all 51 recall points <= 0.5.
    expected = (2 / 3) * 51 / R
    assert m["AP50"] == pytest.approx(expected)
    assert m["AP"] == pytest.approx(expected)
    assert m["AR100"] == pytest.approx(0.5)
    assert m["AR1"] == pytest.approx(0.0)  # the single top detection is the false positive


def test_per_class_table(backend):
    gt = make_gt()
    ev = CocoEvaluator(gt, class_names={3: "doggo"}, backend=backend)
    ev.update(gt_as_predictions(gt, keep=lambda a: a["category_id"] == 1))  # all cats, no dogs
    m = ev.summarize()
    rows = {r[0]: r for r in m["per_class"]}
    assert [r[0] for r in m["per_class"]] == [1, 3, 5]
    assert rows[1] == (1, "cat", pytest.approx(1.0), pytest.approx(1.0), 2)
    assert rows[3] == (3, "doggo", 0.0, 0.0, 2)
    assert rows[5] == (5, "bird", -1.0, -1.0, 0)
    assert m["AP"] == pytest.approx(0.5)
    table = format_metrics_table(m)
    assert "doggo" in table and "AP50" in table and "n/a" in table
    assert table.count("\n") == 2 + 1 + 2 + 3  # summary (3 lines), blank, header+rule, 3 classes


def test_class_names_sequence():
    ev = CocoEvaluator(make_gt(), class_names=["c", "d", "b"])
    assert ev.class_names == {1: "c", 3: "d", 5: "b"}


def test_zero_predictions(backend):
    gt = make_gt()
    ev = CocoEvaluator(gt, backend=backend)
    m = ev.summarize()  # nothing ever added: every gt image counts, all missed
    assert m["AP"] == 0.0 and m["AR100"] == 0.0
    ev.update([{"image_id": 1, "boxes": torch.zeros(0, 4), "scores": torch.zeros(0), "labels": torch.zeros(0)}])
    m = ev.summarize()
    assert m["AP"] == 0.0 and m["APs"] == 0.0 and m["APl"] == -1.0  # only image 1 evaluated
    assert ev.results_json() == []


def test_image_without_gt_only_false_positives(backend):
    gt = make_gt()
    preds = gt_as_predictions(gt)
    preds[2] = {"image_id": 3, "boxes": [[0, 0, 10, 10]], "scores": [0.1], "labels": [1]}  # lower-scored FP
    ev = CocoEvaluator(gt, backend=backend)
    ev.update(preds)
    assert ev.summarize()["AP"] == pytest.approx(1.0)  # FP ranks below all TPs


def test_results_json_round_trip(tmp_path):
    gt = make_gt()
    path = tmp_path / "gt.json"
    path.write_text(json.dumps(gt))
    ev = CocoEvaluator(path)
    ev.update(gt_as_predictions(gt))
    out = tmp_path / "results.json"
    ev.save_results(out)
    loaded = json.loads(out.read_text())
    assert loaded == ev.results_json()
    assert {tuple(r.keys()) for r in loaded} == {("image_id", "category_id", "bbox", "score")}
    got = sorted((r["image_id"], r["category_id"], r["bbox"]) for r in loaded)
    want = sorted((a["image_id"], a["category_id"], [float(v) for v in a["bbox"]]) for a in gt["annotations"])
    assert got == want  # xywh, as in the gt
    assert all(r["score"] == pytest.approx(0.9) for r in loaded)


def test_unknown_image_and_category_ids():
    gt = make_gt()
    ev = CocoEvaluator(gt)
    bad = [
        {"image_id": 42, "boxes": [[0, 0, 1, 1]], "scores": [1.0], "labels": [1]},
        {"image_id": 1, "boxes": [[0, 0, 1, 1]], "scores": [1.0], "labels": [1]},
        {"image_id": 99, "boxes": [[0, 0, 1, 1]], "scores": [1.0], "labels": [1]},
    ]
    with pytest.raises(ValueError, match=r"\[42, 99\]"):
        ev.update(bad)
    assert ev.results_json() == []
    with pytest.raises(ValueError, match="category ids"):
        ev.update([{"image_id": 1, "boxes": [[0, 0, 1, 1]], "scores": [1.0], "labels": [0]}])
    with pytest.raises(ValueError, match="lengths"):
        ev.update([{"image_id": 1, "boxes": [[0, 0, 1, 1]], "scores": [1.0, 0.5], "labels": [1]}])


def test_dtypes_agree():
    gt, preds = random_case(1)
    results = []
    for convert in (lambda t: t.numpy().astype(np.float32), lambda t: t.double(), lambda t: t.float()):
        ev = CocoEvaluator(gt)
        ev.update([{**p, "boxes": convert(p["boxes"]), "scores": convert(p["scores"])} for p in preds])
        results.append(ev.summarize())
    for key in SUMMARY_KEYS:
        assert results[0][key] == pytest.approx(results[1][key], abs=1e-4) == results[2][key], key
    assert results[0]["AP"] > 0.05


def random_case(seed: int = 0) -> tuple[dict, list[dict]]:
    """A noisy case with many images/classes so that metrics are far from trivial."""
    rng = np.random.default_rng(seed)
    images, anns, preds = [], [], []
    for img_id in range(1, 16):
        images.append({"id": img_id, "width": 640, "height": 640})
        n = int(rng.integers(0, 6))
        xy = rng.uniform(0, 400, (n, 2))
        wh = rng.uniform(8, 220, (n, 2))
        cats = rng.choice([1, 3, 5], n)
        for b, c in zip(np.concatenate([xy, wh], 1), cats):
            anns.append(
                {
                    "id": len(anns) + 1,
                    "image_id": img_id,
                    "category_id": int(c),
                    "bbox": b.tolist(),
                    "area": float(b[2] * b[3]),
                    "iscrowd": int(rng.random() < 0.1),
                }
            )
        m = int(rng.integers(0, 8))
        pxy = np.concatenate([xy, rng.uniform(0, 400, (max(m - n, 0), 2))])[:m] + rng.normal(0, 6, (m, 2))
        pwh = np.concatenate([wh, rng.uniform(8, 220, (max(m - n, 0), 2))])[:m] * rng.uniform(0.8, 1.2, (m, 2))
        pcats = np.concatenate([cats, rng.choice([1, 3, 5], max(m - n, 0))])[:m]
        preds.append(
            {
                "image_id": img_id,
                "boxes": torch.from_numpy(np.concatenate([pxy, pxy + pwh], 1)),
                "scores": torch.from_numpy(rng.uniform(0.05, 1, m)),
                "labels": torch.from_numpy(pcats),
            }
        )
    cats = [{"id": c, "name": n} for c, n in ((1, "a"), (3, "b"), (5, "c"))]
    return {"images": images, "annotations": anns, "categories": cats}, preds


def test_backends_agree():
    if len(BACKENDS) < 2:
        pytest.skip(f"needs both faster_coco_eval and pycocotools, have {BACKENDS}")
    gt, preds = random_case()
    out = {}
    for b in BACKENDS:
        ev = CocoEvaluator(gt, backend=b)
        ev.update(preds)
        out[b] = ev.summarize()
    a, b = out["faster_coco_eval"], out["pycocotools"]
    assert 0.05 < a["AP"] < 0.95  # non-trivial
    for key in SUMMARY_KEYS:
        assert a[key] == pytest.approx(b[key], abs=1e-9), key
    for ra, rb in zip(a["per_class"], b["per_class"], strict=True):
        assert ra[:2] == rb[:2] and ra[4] == rb[4]
        assert ra[2:4] == pytest.approx(rb[2:4], abs=1e-9)


def test_synchronize_merges_ranks(monkeypatch):
    gt = make_gt()
    preds = gt_as_predictions(gt)
    rank0, rank1 = CocoEvaluator(gt), CocoEvaluator(gt)
    rank0.update(preds[:2])
    rank1.update([preds[1], preds[2]])  # image 2 duplicated (sampler padding)
    monkeypatch.setattr(coco_eval.dist, "is_initialized", lambda: True)
    monkeypatch.setattr(coco_eval.dist, "get_world_size", lambda: 2)

    def fake_all_gather_object(output, obj):
        output[0], output[1] = rank0._dets, rank1._dets

    monkeypatch.setattr(coco_eval.dist, "all_gather_object", fake_all_gather_object)
    rank0.synchronize()
    assert sorted(rank0._dets) == [1, 2, 3]
    assert len(rank0.results_json()) == len(gt["annotations"])  # duplicate kept once
    assert rank0.summarize()["AP"] == pytest.approx(1.0)


def test_synchronize_noop_without_distributed():
    ev = CocoEvaluator(make_gt())
    ev.update(gt_as_predictions(make_gt()))
    before = ev.results_json()
    ev.synchronize()
    assert ev.results_json() == before


def test_auto_falls_back_to_pycocotools(monkeypatch):
    pytest.importorskip("pycocotools")
    monkeypatch.setitem(__import__("sys").modules, "faster_coco_eval", None)  # import now raises ImportError
    assert available_backends() == ["pycocotools"]
    gt = make_gt()
    ev = CocoEvaluator(gt)
    assert ev.backend == "pycocotools"
    ev.update(gt_as_predictions(gt))
    assert ev.summarize()["AP"] == pytest.approx(1.0)


def test_unknown_backend():
    with pytest.raises(ValueError, match="unknown backend"):
        CocoEvaluator(make_gt(), backend="nope")

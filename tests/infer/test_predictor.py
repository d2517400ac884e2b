"""The predict API: preprocessing, parity with the model, batching, filters, media kinds, video."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

import rtdetr
from rtdetr.infer import Detector, TorchBackend, preprocess
from rtdetr.infer.results import Detections


def _image(h, w, seed=0):
    rng = np.random.default_rng(seed)
    base = rng.random((h // 8 + 1, w // 8 + 1, 3))
    return (np.kron(base, np.ones((8, 8, 1)))[:h, :w] * 255).astype(np.uint8)  # blocky: resizes stay comparable


def _assert_same_detections(a, b, *, score_tol: float = 1e-5, box_tol: float = 1e-3) -> None:
    """Two score-sorted top-K lists ``(labels [K], boxes [K, 4], scores [K])`` hold the same detections.

    Compared as sets, not by position: random weights give scores tied to float
    rounding, and which of two tied detections sorts first depends on the CPU's
    kernels (AVX2 vs AVX-512). Every detection of ``a`` must pair with its own
    detection of ``b`` with the same label, a score within ``score_tol`` and a box
    within ``box_tol`` px; only those tied with the last score are spared, since a
    tie there can push either one past K.
    """
    (la, ba, sa), (lb, bb, sb) = a, b
    assert la.shape == lb.shape and ba.shape == bb.shape
    torch.testing.assert_close(sb, sa, atol=score_tol, rtol=0)  # the sorted score lists agree position by position
    pairs = (
        ((sa[:, None] - sb[None, :]).abs() <= score_tol)
        & (la[:, None] == lb[None, :])
        & ((ba[:, None, :] - bb[None, :, :]).abs().amax(-1) <= box_tol)
    )
    used = torch.zeros(len(sb), dtype=torch.bool)
    unmatched = []
    for i in range(len(sa)):
        free = (pairs[i] & ~used).nonzero().flatten()
        if len(free):
            used[free[0]] = True  # tied candidates are interchangeable: all match within tolerance
        elif sa[i] > sa[-1] + score_tol:
            unmatched.append(i)
    assert not unmatched, f"{len(unmatched)} of {len(sa)} detections have no match, first {unmatched[:5]}"


def test_same_detections_helper_tells_different_results_apart():
    """Guards the set comparison: a shuffle of tied entries passes, a moved box or label does not."""
    labels = torch.tensor([2, 1, 1, 0])
    boxes = torch.tensor([[0.0, 0, 10, 10], [5, 5, 20, 20], [50, 50, 60, 60], [1, 1, 2, 2]])
    scores = torch.tensor([0.9, 0.5, 0.5, 0.1])
    tie_swapped = boxes[[0, 2, 1, 3]]  # entries 1 and 2: same label and score
    _assert_same_detections((labels, boxes, scores), (labels, tie_swapped, scores))
    moved = boxes.clone()
    moved[1, 0] += 1.0
    with pytest.raises(AssertionError, match="no match"):
        _assert_same_detections((labels, boxes, scores), (labels, moved, scores))
    with pytest.raises(AssertionError, match="no match"):
        _assert_same_detections((labels, boxes, scores), (torch.tensor([2, 0, 1, 0]), boxes, scores))


def test_preprocess_matches_pil_bilinear_resize():
    array = _image(150, 220)
    batch, sizes = preprocess([torch.from_numpy(array).permute(2, 0, 1)], 96)
    ref = np.asarray(Image.fromarray(array).resize((96, 96), Image.BILINEAR), dtype=np.float32) / 255
    ours = batch[0].permute(1, 2, 0).numpy()
    assert sizes.tolist() == [[220, 150]]
    assert batch.dtype == torch.float32 and 0 <= ours.min() and ours.max() <= 1
    assert np.abs(ours - ref).mean() < 1.5 / 255  # PIL and torch antialias kernels differ by rounding
    assert np.abs(ours - ref).max() <= 12 / 255


def test_predictions_equal_model_plus_postprocessor(detector):
    image = torch.from_numpy(_image(180, 240, seed=3)).permute(2, 0, 1)
    (det,) = detector.predict(image, conf=0.0, max_det=300)
    batch, sizes = preprocess([image], detector.imgsz)
    model = detector.backend.module.model
    with torch.no_grad():
        out = model(batch)
    post = rtdetr.build_postprocessor(model)
    ref = post(out, sizes)[0]
    assert det.image_size == (240, 180)
    assert torch.equal(det.labels, ref["labels"])
    ref_boxes = ref["boxes"].clone()
    ref_boxes[:, 0::2] = ref_boxes[:, 0::2].clamp(0, 240)
    ref_boxes[:, 1::2] = ref_boxes[:, 1::2].clamp(0, 180)
    torch.testing.assert_close(det.boxes, ref_boxes, atol=1e-3, rtol=0)
    torch.testing.assert_close(det.scores, ref["scores"], atol=1e-5, rtol=0)
    assert det.boxes[:, 0::2].max() <= 240 and det.boxes[:, 1::2].max() <= 180


def test_deploy_fusion_matches_unfused_model():
    torch.manual_seed(1)
    model = rtdetr.build_model("rtdetr_r18vd", num_classes=3, num_queries=50, num_top_queries=50)
    # Non-trivial BN statistics so the fusion has something to fold.
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 1.5)
    x = torch.rand(1, 3, 128, 128)
    sizes = torch.tensor([[300, 200]])
    import copy

    eager = TorchBackend(copy.deepcopy(model), fuse=False, channels_last=False)(x, sizes)
    fused_backend = TorchBackend(model, fuse=True)
    assert not any(hasattr(m, "conv1") and hasattr(m, "conv") for m in fused_backend.module.modules())
    fused = fused_backend(x, sizes)
    _assert_same_detections([t[0] for t in eager], [t[0] for t in fused])


def test_batch_equals_single_images(detector):
    images = [torch.from_numpy(_image(h, w, seed=h)).permute(2, 0, 1) for h, w in ((100, 130), (256, 256), (90, 300))]
    singles = [detector.predict(im, conf=0.0)[0] for im in images]
    batched = detector.predict(images, conf=0.0, batch_size=3)
    for s, b in zip(singles, batched):
        assert s.image_size == b.image_size
        _assert_same_detections((s.labels, s.boxes, s.scores), (b.labels, b.boxes, b.scores))
    # The comparison is strict enough to see results handed to the wrong image.
    with pytest.raises(AssertionError):
        _assert_same_detections(
            (singles[0].labels, singles[0].boxes, singles[0].scores),
            (batched[2].labels, batched[2].boxes, batched[2].scores),
        )


def test_filters_conf_classes_max_det(detector):
    image = torch.from_numpy(_image(128, 128)).permute(2, 0, 1)
    (all_,) = detector.predict(image, conf=0.0)
    assert len(all_) == 300 and torch.all(all_.scores[:-1] >= all_.scores[1:])
    threshold = float(all_.scores[10])
    (high,) = detector.predict(image, conf=threshold)
    assert len(high) == int((all_.scores >= threshold).sum()) and torch.all(high.scores >= threshold)
    label = int(all_.labels[0])
    (only,) = detector.predict(image, conf=0.0, classes=[label])
    assert len(only) > 0 and set(only.labels.tolist()) == {label}
    (few,) = detector.predict(image, conf=0.0, max_det=7)
    assert len(few) == 7 and torch.equal(few.scores, all_.scores[:7])


def test_results_api(detector, tmp_path):
    image = torch.from_numpy(_image(64, 96)).permute(2, 0, 1)
    (det,) = detector.predict(image, conf=0.0, max_det=3)
    assert det.names == [detector.class_names[i] for i in det.labels.tolist()]
    coco = det.to_coco_json(image_id=7, category_ids=[10, 11, 12, 13, 14])
    x0, y0, x1, y1 = det.boxes[0].tolist()
    assert coco[0]["image_id"] == 7 and coco[0]["category_id"] == 10 + int(det.labels[0])
    assert coco[0]["bbox"] == pytest.approx([x0, y0, x1 - x0, y1 - y0], abs=0.01)
    drawn = det.plot()
    assert drawn.shape == (3, 64, 96) and drawn.dtype == torch.uint8 and not torch.equal(drawn, image)
    assert Image.open(det.save(tmp_path / "out.png")).size == (96, 64)
    d = det.to_dict()
    assert json.loads(json.dumps(d))["image_size"] == [96, 64] and len(d["boxes"]) == 3
    assert len(det.filter(det.scores >= det.scores[1])) == 2
    assert len(Detections.empty((4, 4))) == 0


def test_odd_image_files_load(detector, tmp_path):
    rgb = _image(40, 60)
    files = {
        "gray.png": Image.fromarray(rgb).convert("L"),
        "rgba.png": Image.fromarray(rgb).convert("RGBA"),
        "palette.gif": Image.fromarray(rgb).convert("P"),
        "cmyk.jpg": Image.fromarray(rgb).convert("CMYK"),
        "sixteen.png": Image.fromarray(rgb[:, :, 0].astype(np.uint16) * 257),
    }
    for name, im in files.items():
        im.save(tmp_path / name)
    rotated = Image.fromarray(rgb)
    exif = rotated.getexif()
    exif[0x0112] = 6  # rotate 90 degrees on display: 60x40 stored -> 40x60 shown
    rotated.save(tmp_path / "exif.jpg", exif=exif)
    results = {r.source.split("/")[-1]: r for r in detector.predict(tmp_path, conf=0.0, max_det=1)}
    assert set(results) == set(files) | {"exif.jpg"}
    assert results["exif.jpg"].image_size == (40, 60)
    assert all(r.image_size == (60, 40) for n, r in results.items() if n != "exif.jpg")
    assert Image.open(tmp_path / "sixteen.png").mode.startswith("I")  # really a 16-bit file


def test_stream_keeps_images_and_lists_reread_files(detector, tmp_path):
    for i in range(3):
        Image.fromarray(_image(50, 70, seed=i)).save(tmp_path / f"{i}.png")
    gen = detector.predict(tmp_path, conf=0.0, stream=True)
    first = next(gen)
    assert first.image is not None and first.image.shape == (3, 50, 70)
    listed = detector.predict(tmp_path, conf=0.0, max_det=2)
    assert all(r.image is None for r in listed)
    assert listed[0].plot().shape == (3, 50, 70)  # re-read from its file


def test_bf16_precision_runs_close_to_fp32():
    torch.manual_seed(0)
    model = rtdetr.build_model("rtdetrv2_hgnetv2_n", num_classes=5)
    fp32 = Detector(model, imgsz=256, precision="fp32")  # each Detector works on its own copy
    bf16 = Detector(model, imgsz=256, precision="bf16")
    image = torch.from_numpy(_image(256, 256)).permute(2, 0, 1)
    (a,), (b,) = fp32.predict(image, conf=0.0), bf16.predict(image, conf=0.0)
    assert b.scores.dtype == torch.float32 and len(b) == len(a)
    assert (a.scores[:20] - b.scores[:20]).abs().max() < 0.05


def test_bad_arguments(detector):
    with pytest.raises(ValueError, match="multiple of 32"):
        Detector(detector.backend, imgsz=100)
    with pytest.raises(ValueError, match="class names"):
        Detector(detector.backend, class_names=["a"])
    with pytest.raises(ValueError, match="batch_size"):
        detector.predict(torch.zeros(3, 8, 8), batch_size=0)
    with pytest.raises(ValueError, match="fp16"):
        TorchBackend(rtdetr.build_model("rtdetrv2_hgnetv2_n"), precision="fp16")
    with pytest.raises(FileNotFoundError, match="model file not found"):
        Detector.from_pretrained("missing.pt")


def test_imgsz_override_per_call(detector):
    image = torch.from_numpy(_image(100, 100)).permute(2, 0, 1)
    (a,) = detector.predict(image, conf=0.0, imgsz=320)
    (b,) = detector.predict(image, conf=0.0)
    assert a.image_size == b.image_size == (100, 100)
    assert not torch.allclose(a.scores, b.scores)  # a different input size really ran

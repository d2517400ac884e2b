"""The registry of published weights."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

import rtdetr
from rtdetr.data.coco_categories import COCO_CATEGORY_IDS, COCO_CLASS_NAMES
from rtdetr.weights import WEIGHTS, WeightsEntry, get_weights, list_weights

RELEASE = "https://github.com/lyuwenyu/storage/releases/download/v0.1/"


def test_every_v1_preset_has_coco_weights_and_o365_where_published():
    coco = {e.model_name: e for e in list_weights() if e.tag == "coco"}
    o365 = {e.model_name: e for e in list_weights() if e.tag == "coco+o365"}
    assert set(coco) == {"rtdetr_r18vd", "rtdetr_r34vd", "rtdetr_r50vd_m", "rtdetr_r50vd", "rtdetr_r101vd"}
    assert set(o365) == {"rtdetr_r18vd", "rtdetr_r50vd", "rtdetr_r101vd"}
    assert set(coco) <= set(rtdetr.list_models())
    assert coco["rtdetr_r18vd"].url == RELEASE + "rtdetr_r18vd_dec3_6x_coco_from_paddle.pth"
    assert o365["rtdetr_r50vd"].url == RELEASE + "rtdetr_r50vd_2x_coco_objects365_from_paddle.pth"
    assert coco["rtdetr_r50vd_m"].hub_repo == "PekingU/rtdetr_r50vd_m"
    assert o365["rtdetr_r101vd"].hub_repo == "PekingU/rtdetr_r101vd_coco_o365"
    aps = {e.name: e.metrics["ap"] for e in list_weights()}
    assert aps["rtdetr_r18vd:coco"] == 46.5 and aps["rtdetr_r101vd:coco"] == 54.3
    assert aps["rtdetr_r18vd:coco+o365"] == 49.2 and aps["rtdetr_r50vd:coco+o365"] == 55.3


def test_entries_carry_coco_classes_and_are_frozen():
    e = get_weights("rtdetr_r18vd", "coco")
    assert list(e.class_names) == COCO_CLASS_NAMES and list(e.category_ids) == COCO_CATEGORY_IDS
    assert e.num_classes == 80 and e.input_size == (640, 640) and e.dataset == "COCO"
    with pytest.raises(dataclasses.FrozenInstanceError):
        e.url = "x"  # type: ignore[misc]
    with pytest.raises(TypeError):
        e.metrics["ap"] = 1.0  # type: ignore[index]
    assert isinstance(hash(e), int)
    assert "rtdetr_r18vd:coco" in str(e)
    assert WEIGHTS[("rtdetr_r18vd", "coco")] is e


def test_list_weights_per_model_and_tag_aliases():
    assert [e.tag for e in list_weights("rtdetr_r50vd")] == ["coco", "coco+o365"]
    assert [e.tag for e in list_weights("rtdetr_r34vd")] == ["coco"]
    assert list_weights("no_such_model") == []
    assert get_weights("rtdetr_r18vd", "COCO_O365").tag == "coco+o365"
    with pytest.raises(ValueError, match="available for rtdetr_r34vd: coco"):
        get_weights("rtdetr_r34vd", "coco+o365")


def test_cache_path_follows_torch_home(tmp_path):
    # conftest points TORCH_HOME into tmp_path
    e = get_weights("rtdetr_r18vd", "coco")
    assert e.cache_path == tmp_path / "torch_home" / "hub" / "checkpoints" / e.file_name
    assert e.file_name == Path(e.url).name


def test_entry_validates_class_lists():
    with pytest.raises(ValueError, match="must have 3 entries"):
        WeightsEntry("m", "t", "https://x/y.pth", "a/b", "D", num_classes=3)

"""No network: fail fast with one clear error naming the URL and the cache path; then load from there."""

from __future__ import annotations

import socket
import time

import pytest
import torch

import rtdetr
from rtdetr.data.coco_categories import COCO_CLASS_NAMES
from rtdetr.weights import WeightsDownloadError, convert_checkpoint, get_weights, load_weights
from rtdetr.weights.download import hf_repo_cache_dir, url_cache_path

LIMIT_S = 10.0


@pytest.fixture
def no_dns(monkeypatch):
    """Every host name fails to resolve, as on a machine without network."""

    def fail(*args, **kwargs):
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    monkeypatch.setattr(socket, "getaddrinfo", fail)


@pytest.fixture(scope="module")
def r18_state():
    return rtdetr.build_model("rtdetr_r18vd").state_dict()


def test_registry_tag_offline_fails_fast_then_loads_from_the_cache_path(no_dns, r18_state):
    entry = get_weights("rtdetr_r18vd", "coco")
    t0 = time.monotonic()
    with pytest.raises(WeightsDownloadError) as info:
        rtdetr.build_model("rtdetr_r18vd", weights="coco")
    assert time.monotonic() - t0 < LIMIT_S
    err = info.value
    assert err.url == entry.url and err.cache_path == entry.cache_path
    assert entry.url in str(err) and str(entry.cache_path) in str(err)
    assert "hf:PekingU/rtdetr_r18vd" in str(err)  # the alternative source
    assert err.__cause__ is None and err.__suppress_context__  # one error, no chained traceback
    assert not entry.cache_path.exists()

    # the file placed there by hand (still no network)
    entry.cache_path.parent.mkdir(parents=True)
    torch.save({"ema": {"module": r18_state}}, entry.cache_path)
    model = rtdetr.build_model("rtdetr_r18vd", weights="coco")
    assert model.class_names == COCO_CLASS_NAMES
    report = load_weights(model, "coco")
    assert report.weights is entry and report.path == entry.cache_path and report.state_key == "ema.module"


def test_hanging_dns_is_cut_short(monkeypatch):
    def hang(*args, **kwargs):
        time.sleep(20)
        raise socket.gaierror("too late")

    monkeypatch.setattr(socket, "getaddrinfo", hang)
    model = rtdetr.build_model("rtdetr_r18vd")
    t0 = time.monotonic()
    with pytest.raises(WeightsDownloadError, match="DNS lookup of github.com timed out"):
        load_weights(model, "coco+o365")
    assert time.monotonic() - t0 < LIMIT_S


def test_unroutable_url_fails_fast_and_cached_url_loads(r18_state):
    url = "https://192.0.2.1/weights/my_rtdetr.pth"  # TEST-NET-1: never routable
    model = rtdetr.build_model("rtdetr_r18vd")
    t0 = time.monotonic()
    with pytest.raises(WeightsDownloadError) as info:
        load_weights(model, url)
    assert time.monotonic() - t0 < LIMIT_S
    assert url in str(info.value) and str(url_cache_path(url)) in str(info.value)

    url_cache_path(url).parent.mkdir(parents=True)
    torch.save({"model": r18_state, "class_names": [f"k{i}" for i in range(80)]}, url_cache_path(url))
    report = load_weights(model, url)
    assert report.format == "rtdetr" and model.class_names[79] == "k79"


def test_hf_repo_offline_fails_fast_then_loads_from_the_hf_cache(no_dns, r18_state, tmp_path, monkeypatch):
    pytest.importorskip("huggingface_hub")
    repo = "PekingU/rtdetr_r18vd"
    model = rtdetr.build_model("rtdetr_r18vd")
    t0 = time.monotonic()
    with pytest.raises(WeightsDownloadError) as info:
        load_weights(model, f"hf:{repo}")
    assert time.monotonic() - t0 < LIMIT_S
    msg = str(info.value)
    assert f"https://huggingface.co/{repo}/resolve/main/model.safetensors" in msg
    assert str(hf_repo_cache_dir(repo)) in msg and str(tmp_path / "hf_home") in msg

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(WeightsDownloadError, match="HF_HUB_OFFLINE"):
        load_weights(model, f"hf:{repo}")

    # a cache copied from a connected machine: refs/main -> snapshots/<commit>/
    torch.save({"model": r18_state}, tmp_path / "ours.pth")
    commit = "0123456789abcdef0123456789abcdef01234567"
    snapshot = hf_repo_cache_dir(repo) / "snapshots" / commit
    convert_checkpoint(tmp_path / "ours.pth", snapshot, to="hf")
    (hf_repo_cache_dir(repo) / "refs").mkdir(parents=True)
    (hf_repo_cache_dir(repo) / "refs" / "main").write_text(commit)
    report = load_weights(model, f"hf:{repo}")
    assert report.format == "hf" and report.path == snapshot / "model.safetensors"

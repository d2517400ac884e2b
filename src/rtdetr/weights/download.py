"""Fetching weight files: URLs into the torch hub cache, ``hf:`` repos into the Hugging Face cache.

Cached files are used without touching the network. Otherwise the host is probed
first with a short timeout (DNS lookup and TCP connect, through the configured proxy
if any), so an offline machine fails in a few seconds with one
:class:`WeightsDownloadError` that names the URL and the exact place where the file
can be put by hand, instead of hanging or retrying.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import urllib.error
import urllib.request
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlparse

import torch

from .errors import WeightsDownloadError

__all__ = [
    "CONNECT_TIMEOUT_S",
    "url_cache_path",
    "fetch_url",
    "fetch_hf",
    "hf_cache_dir",
    "hf_repo_cache_dir",
    "check_reachable",
]

log = logging.getLogger(__name__)

CONNECT_TIMEOUT_S = 3.0  # DNS lookup and TCP connect, each
READ_TIMEOUT_S = 60.0  # a stalled transfer fails instead of hanging forever
HF_WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")


def url_cache_path(url: str) -> Path:
    """``<torch hub dir>/checkpoints/<file name of url>`` (follows ``TORCH_HOME``)."""
    name = Path(urlparse(url).path).name
    if not name:
        raise ValueError(f"URL has no file name: {url}")
    return Path(torch.hub.get_dir()) / "checkpoints" / name


def _resolve(host: str, port: int, timeout: float) -> list[tuple]:
    """getaddrinfo with a deadline (the C resolver has none); the lookup thread is abandoned."""
    result: dict[str, object] = {}

    def target() -> None:
        try:
            result["addrs"] = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except OSError as e:
            result["error"] = e

    t = threading.Thread(target=target, name=f"resolve-{host}", daemon=True)
    t.start()
    t.join(timeout)
    if t.is_alive():
        raise OSError(f"DNS lookup of {host} timed out after {timeout:g} s")
    if "error" in result:
        raise OSError(f"cannot resolve {host} ({result['error']})")
    return result["addrs"]  # type: ignore[return-value]


def check_reachable(url: str, timeout: float = CONNECT_TIMEOUT_S) -> None:
    """Raise OSError (with a readable message) unless a TCP connection to the URL's host
    (or to the proxy configured for it) opens within ``timeout`` seconds."""
    parts = urlparse(url)
    host, port = parts.hostname or "", parts.port or (443 if parts.scheme == "https" else 80)
    proxy = urllib.request.getproxies().get(parts.scheme)
    if proxy and not urllib.request.proxy_bypass(host):
        p = urlparse(proxy if "://" in proxy else f"http://{proxy}")
        host, port = p.hostname or host, p.port or 80
    last: OSError | None = None
    for family, kind, proto, _, addr in _resolve(host, port, timeout)[:3]:
        try:
            with socket.socket(family, kind, proto) as s:
                s.settimeout(timeout)
                s.connect(addr)
            return
        except OSError as e:
            last = e
    detail = "timed out" if isinstance(last, TimeoutError) else str(last)
    raise OSError(f"cannot connect to {host}:{port} ({detail}; waited at most {timeout:g} s)")


@contextmanager
def _socket_timeout(seconds: float):
    """Bound every blocking socket call inside (urllib opens sockets with the default timeout)."""
    old = socket.getdefaulttimeout()
    socket.setdefaulttimeout(seconds)
    try:
        yield
    finally:
        socket.setdefaulttimeout(old)


def fetch_url(url: str, *, progress: bool = True, timeout: float = CONNECT_TIMEOUT_S, hint: str = "") -> Path:
    """Local path of ``url``'s file: the torch hub cache copy, downloading it if absent.

    Raises:
        WeightsDownloadError: unreachable host, HTTP error or interrupted transfer; the
            message names the URL and :func:`url_cache_path` (``hint`` is appended).
    """
    dst = url_cache_path(url)
    if dst.is_file():
        log.debug("using cached %s", dst)
        return dst
    try:
        check_reachable(url, timeout)
        dst.parent.mkdir(parents=True, exist_ok=True)
        log.info("downloading %s to %s", url, dst)
        with _socket_timeout(READ_TIMEOUT_S):
            torch.hub.download_url_to_file(url, str(dst), progress=progress)
    except urllib.error.HTTPError as e:
        raise WeightsDownloadError(url, dst, f"HTTP {e.code} {e.reason}", hint) from None
    except urllib.error.URLError as e:
        raise WeightsDownloadError(url, dst, str(e.reason), hint) from None
    except OSError as e:  # includes socket timeouts and the reachability check
        raise WeightsDownloadError(url, dst, str(e) or type(e).__name__, hint) from None
    return dst


# ----------------------------------------------------------------------------- Hugging Face Hub
def hf_cache_dir() -> Path:
    """The Hugging Face hub cache, read from the environment at call time
    (``HF_HUB_CACHE``, else ``HF_HOME/hub``, else ``~/.cache/huggingface/hub``)."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    home = os.environ.get("HF_HOME") or os.path.join(
        os.environ.get("XDG_CACHE_HOME", os.path.join("~", ".cache")), "huggingface"
    )
    return Path(home).expanduser() / "hub"


def hf_repo_cache_dir(repo_id: str) -> Path:
    """``<hf cache>/models--ORG--NAME``: the folder holding one model repo's cached files."""
    return hf_cache_dir() / ("models--" + repo_id.replace("/", "--"))


def _hf_endpoint() -> str:
    return os.environ.get("HF_ENDPOINT", "https://huggingface.co").rstrip("/")


def _import_hub():
    try:
        import huggingface_hub
    except ImportError:
        raise ImportError(
            "loading 'hf:' weights needs the huggingface_hub package: pip install huggingface_hub"
        ) from None
    return huggingface_hub


def _hf_local(hub, repo_id: str, filename: str, revision: str | None) -> Path | None:
    try:
        path = hub.hf_hub_download(
            repo_id, filename, revision=revision, cache_dir=hf_cache_dir(), local_files_only=True
        )
    except Exception:  # not cached (LocalEntryNotFoundError and friends)
        return None
    return Path(path)


def fetch_hf(
    repo_id: str, *, revision: str | None = None, timeout: float = CONNECT_TIMEOUT_S
) -> tuple[Path, Path | None]:
    """(weights file, config.json or None) of a Hub model repo, from the cache or downloaded.

    Looks for ``model.safetensors``, then ``pytorch_model.bin``.

    Raises:
        WeightsDownloadError: not cached and the Hub is unreachable (or ``HF_HUB_OFFLINE``
            is set), or the repo / file does not exist.
    """
    hub = _import_hub()
    rev = revision or "main"
    first_url = f"{_hf_endpoint()}/{repo_id}/resolve/{rev}/{HF_WEIGHT_FILES[0]}"
    repo_dir = hf_repo_cache_dir(repo_id)
    place = f"run `hf download {repo_id}` (huggingface_hub CLI) on a connected machine and copy its cache folder to"
    hint = f"(or put the repo's config.json and {HF_WEIGHT_FILES[0]} in a folder and pass weights='<that folder>')"
    for name in HF_WEIGHT_FILES:
        weights = _hf_local(hub, repo_id, name, revision)
        if weights is not None:
            return weights, _hf_local(hub, repo_id, "config.json", revision)

    if os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on"):
        raise WeightsDownloadError(first_url, repo_dir, "HF_HUB_OFFLINE is set and the repo is not cached", hint, place)
    try:
        check_reachable(_hf_endpoint(), timeout)
    except OSError as e:
        raise WeightsDownloadError(first_url, repo_dir, str(e), hint, place) from None

    not_found = tuple(
        getattr(hub.errors, n) for n in ("EntryNotFoundError", "RemoteEntryNotFoundError") if hasattr(hub.errors, n)
    )
    for name in HF_WEIGHT_FILES:
        url = f"{_hf_endpoint()}/{repo_id}/resolve/{rev}/{name}"
        try:
            with _socket_timeout(READ_TIMEOUT_S):
                weights = Path(hub.hf_hub_download(repo_id, name, revision=revision, cache_dir=hf_cache_dir()))
        except not_found:
            continue
        except Exception as e:  # repo missing, gated, HTTP or connection errors
            reason = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
            raise WeightsDownloadError(url, repo_dir, reason, hint, place) from None
        try:
            config = Path(hub.hf_hub_download(repo_id, "config.json", revision=revision, cache_dir=hf_cache_dir()))
        except Exception:
            config = None
        return weights, config
    raise WeightsDownloadError(first_url, repo_dir, f"the repo has none of {', '.join(HF_WEIGHT_FILES)}", hint, place)

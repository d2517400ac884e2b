"""Process-level runtime choices: which reduced precision pays on this machine, and the CPU set-up.

One capability check, :func:`cpu_supports_bf16`, answers "does bf16 run natively on
this CPU?" for every entry point: the :class:`~rtdetr.train.Trainer` (``--amp``),
:class:`~rtdetr.infer.Detector` and ``rtdetr predict / benchmark / serve``
(``precision="auto"``). Without native bf16 (AVX512-BF16 or AMX), oneDNN emulates
it and a bf16 autocast step is several times *slower* than float32 (a 3x3 conv
forward + backward on [4, 64, 80, 80]: 1.02 s bf16 vs 0.061 s fp32 on an AVX2 CPU).

:func:`setup_cpu_runtime` is the one CPU set-up (flush denormals, intra-op threads,
optionally glibc's malloc keeping freed memory) that the CLI, the Trainer,
``validate`` and :class:`~rtdetr.infer.Detector` call.
"""

from __future__ import annotations

import ctypes
import functools
import logging
import os
import sys
import threading
from typing import TYPE_CHECKING, Any

from .errors import UserError

if TYPE_CHECKING:
    import torch

# torch is imported inside the functions: the CLI's parsers read PRECISIONS and
# PRECISION_HELP, and `rtdetr --help` should not pay for importing torch.

__all__ = [
    "PrecisionError",
    "CPU_BF16_ENV",
    "PRECISIONS",
    "PRECISION_HELP",
    "cpu_supports_bf16",
    "cpu_description",
    "flush_denormals_on_intra_op_threads",
    "resolve_precision",
    "resolve_amp_dtype",
    "warn_if_bf16_emulated",
    "setup_cpu_runtime",
    "resolve_device",
    "keep_freed_memory",
    "KEEP_FREED_MEMORY_ENV",
]

log = logging.getLogger(__name__)

#: ``RTDETR_CPU_BF16=1`` declares this CPU's bf16 native (keeps bf16 where it would fall
#: back to float32), ``=0`` declares it emulated; unset: detected.
CPU_BF16_ENV = "RTDETR_CPU_BF16"

#: Inference precisions: "auto" resolves to one of the others (:func:`resolve_precision`).
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
PRECISION_HELP = (
    "auto (default): bf16 on CPUs with native bf16 (AVX512-BF16 / AMX), fp16 on CUDA GPUs with "
    "tensor cores, else fp32 (bf16 on other CPUs is slower than fp32)"
)


class PrecisionError(UserError, ValueError):
    """An unknown precision / amp dtype, or one the device cannot run (fp16 on a CPU)."""


# oneDNN ISA caps (ONEDNN_MAX_CPU_ISA) under which it has no native bf16 instructions.
_ONEDNN_ISAS_WITHOUT_BF16 = {"SSE41", "AVX", "AVX2", "AVX2_VNNI", "AVX2_VNNI_2", "AVX512_CORE", "AVX512_CORE_VNNI"}


@functools.lru_cache(maxsize=1)
def _hardware_has_bf16() -> bool:
    """AVX512-BF16 or AMX-BF16 present in the CPU (cpuinfo through torch, else /proc/cpuinfo)."""
    import torch

    probes = [getattr(torch.cpu, name, None) for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported")]
    if all(p is not None for p in probes):
        return any(p() for p in probes)
    try:
        with open("/proc/cpuinfo") as f:
            flags = f.read()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def cpu_supports_bf16() -> bool:
    """True when bf16 math runs natively here (AVX512-BF16 or AMX), the only CPUs where bf16 pays.

    Decided, in order, by:

    1. ``RTDETR_CPU_BF16=1`` / ``=0`` (:data:`CPU_BF16_ENV`): the user's word;
    2. the ATen kernels this process runs: ``torch.backends.cpu.get_cpu_capability()``
       below AVX512 (``ATEN_CPU_CAPABILITY=avx2``, an AVX2-only CPU, ARM's "DEFAULT")
       means no native bf16, as does a oneDNN ISA cap below AVX512_CORE_BF16
       (``ONEDNN_MAX_CPU_ISA=AVX2``); these hide nothing from ``/proc/cpuinfo``,
       so they are checked first;
    3. the CPU's flags: AVX512-BF16 or AMX-BF16.
    """
    import torch

    forced = os.environ.get(CPU_BF16_ENV, "").strip().lower()
    if forced in ("1", "true", "yes", "on"):
        return True
    if forced in ("0", "false", "no", "off"):
        return False
    try:
        capability = torch.backends.cpu.get_cpu_capability().upper()
    except AttributeError:  # torch without the query: assume the worst
        return False
    if not capability.startswith("AVX512"):
        return False
    isa_cap = (os.environ.get("ONEDNN_MAX_CPU_ISA") or os.environ.get("DNNL_MAX_CPU_ISA") or "").strip().upper()
    if isa_cap in _ONEDNN_ISAS_WITHOUT_BF16:
        return False
    return _hardware_has_bf16()


def resolve_precision(precision: str, device: str | torch.device) -> str:
    """The inference precision ``"fp32"``, ``"bf16"`` or ``"fp16"`` that ``precision`` means on ``device``.

    ``"auto"`` picks:

    * CPU: ``"bf16"`` where :func:`cpu_supports_bf16` (about 1.8x faster than fp32
      for rtdetr_r18vd at 640 on AVX512-BF16 cores), else ``"fp32"`` (emulated bf16
      is slower than fp32);
    * CUDA: ``"fp16"`` on GPUs with tensor cores (compute capability >= 7.0), as
      RT-DETR is deployed (the paper's speeds are TensorRT fp16) and with more
      mantissa than bf16 for box coordinates; ``"fp32"`` on older GPUs;
    * any other device: ``"fp32"``.

    Other values are returned unchanged (validated, not checked for speed).
    """
    import torch

    if precision not in PRECISIONS:
        raise PrecisionError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    if precision != "auto":
        return precision
    device = torch.device(device)
    if device.type == "cpu":
        return "bf16" if cpu_supports_bf16() else "fp32"
    if device.type == "cuda":
        major, _ = torch.cuda.get_device_capability(device)
        return "fp16" if major >= 7 else "fp32"
    return "fp32"


_NOT_NATIVE_WHY = (
    "this CPU has no native bf16 (AVX512-BF16 or AMX; ATen capability {cap}), so bf16 autocast "
    "would be several times slower than float32"
)


def resolve_amp_dtype(
    device: str | torch.device, amp: bool, amp_dtype: str = "auto", *, force: bool = False
) -> torch.dtype | None:
    """The autocast dtype of a mixed-precision run, or None to run in float32.

    ``amp_dtype`` "auto" is float16 on CUDA (with a GradScaler, as the reference
    trains) and bfloat16 elsewhere. On a CPU without native bf16
    (:func:`cpu_supports_bf16`) bfloat16 falls back to float32 with one warning
    saying why, unless ``force`` (``TrainConfig.amp_force``, ``--amp-force``, or
    ``RTDETR_CPU_BF16=1``) keeps it. Callers resolve once per run and log nothing
    else, so each run warns at most once.
    """
    import torch

    if not amp:
        return None
    device = torch.device(device)
    name = ("float16" if device.type == "cuda" else "bfloat16") if amp_dtype == "auto" else amp_dtype
    if name not in ("bfloat16", "float16"):
        raise PrecisionError(f"amp_dtype must be 'auto', 'bfloat16' or 'float16', got {amp_dtype!r}")
    dtype = getattr(torch, name)
    if device.type == "cpu" and dtype == torch.bfloat16 and not force and not cpu_supports_bf16():
        log.warning(
            "amp: running in float32 instead of bf16 autocast: %s. amp_force=True (--amp-force) or %s=1 keeps bf16.",
            _NOT_NATIVE_WHY.format(cap=_capability()),
            CPU_BF16_ENV,
        )
        return None
    return dtype


def _capability() -> str:
    import torch

    try:
        return torch.backends.cpu.get_cpu_capability()
    except AttributeError:
        return "unknown"


def cpu_description() -> str:
    """The ATen CPU capability and the instruction sets that change our numbers, e.g.
    ``"AVX512 (AVX512-BF16, AMX, VNNI)"`` or ``"AVX2"``: recorded next to every benchmark number."""
    extras = []
    try:
        with open("/proc/cpuinfo") as f:
            flags = set(next((line for line in f if line.startswith("flags")), "").split())
    except OSError:
        flags = set()
    for flag, name in (
        ("avx512_bf16", "AVX512-BF16"),
        ("amx_tile", "AMX"),
        ("avx512_vnni", "VNNI"),
        ("avx_vnni", "AVX-VNNI"),
    ):
        if flag in flags:
            extras.append(name)
    cap = _capability()
    return f"{cap} ({', '.join(extras)})" if extras else cap


def warn_if_bf16_emulated(precision: str, device: torch.device) -> None:
    """One warning when bf16 inference was asked for explicitly on a CPU that emulates it."""
    if precision == "bf16" and device.type == "cpu" and not cpu_supports_bf16():
        log.warning(
            "precision 'bf16': %s; precision 'auto' or 'fp32' is faster here", _NOT_NATIVE_WHY.format(cap=_capability())
        )


# ---------------------------------------------------------------------------------- CPU set-up

# mallopt() parameters, from glibc's <malloc.h>
_M_TRIM_THRESHOLD, _M_MMAP_MAX, _M_ARENA_MAX = -1, -4, -8
# keep_freed_memory() as glibc environment variables, read when a process starts
KEEP_FREED_MEMORY_ENV: dict[str, str] = {
    "MALLOC_MMAP_MAX_": "0",
    "MALLOC_TRIM_THRESHOLD_": "68719476736",
    "MALLOC_ARENA_MAX": "1",
}


def keep_freed_memory() -> bool:
    """Make glibc's malloc keep freed memory for reuse instead of handing it back to the kernel.

    Call it once, at process start, before the thread that will run the model first
    allocates (a thread keeps the malloc arena it was given). Process-wide; returns
    False, changing nothing, where the C library is not glibc.

    Why: glibc serves a block above its mmap threshold (adaptive, at most 32 MiB on
    64-bit) with a fresh ``mmap`` and unmaps it on free, so every such tensor is
    page-faulted in again, the kernel zeroing each 4 KiB page, on every forward. At
    640 px most activations of a batch of 4 or more are that large: rtdetr_r18vd
    takes ~30k (batch 4) to ~80k (batch 8) page faults and 60-180 ms of kernel CPU
    time per image, which is most of the rise of its per-image CPU time with the
    batch size. Here ``mmap`` is off and the heap is never trimmed, so big tensors
    reuse heap memory, and there is one arena: a thread's own arena grows in 64 MiB
    heaps and would still ``mmap`` anything larger. The cost: the process keeps its
    peak footprint (rtdetr_r18vd at batches 1-8: 2.2 GB resident, against a 1.9 GB
    peak and 1.3 GB between batches with the defaults). The environment
    :data:`KEEP_FREED_MEMORY_ENV` does the same from the start of a (child) process.
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return False
    if not hasattr(libc, "gnu_get_libc_version") or not hasattr(libc, "mallopt"):  # not glibc (e.g. musl)
        return False
    # -1 (SIZE_MAX once converted) disables trimming, as mallopt(3) documents
    settings = ((_M_MMAP_MAX, 0), (_M_TRIM_THRESHOLD, -1), (_M_ARENA_MAX, 1))
    ok = all(libc.mallopt(param, value) == 1 for param, value in settings)
    if not ok:
        log.warning("mallopt refused a setting: freed memory may still go back to the kernel")
    return ok


def resolve_device(device: str | torch.device = "auto") -> str:
    """``"auto"`` -> ``"cuda"`` when available, else ``"cpu"``; other values checked and kept.

    Raises:
        UserError: an unknown device string, or CUDA asked for where there is none.
    """
    import torch

    text = str(device)
    if text == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    try:
        torch.device(text)
    except RuntimeError:
        raise UserError(f"unknown device {text!r}; expected auto, cpu, cuda or cuda:N") from None
    if text.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"device {text!r} requested but CUDA is not available; use --device cpu")
    return text


_OPENMP_RUNTIMES = ("libgomp", "libiomp5", "libomp")  # GNU, Intel, LLVM: each has GOMP_parallel


def _loaded_openmp_runtime(torch_dir: str) -> str | None:
    """The file of the OpenMP runtime this process has loaded for torch's intra-op pool, or
    None where it cannot be told (no ``/proc``: not Linux). Other wheels may bundle their
    own copy (scikit-learn's ``libgomp-<hash>.so``): torch's (``torch/lib`` or
    ``torch.libs``) wins."""
    try:
        with open("/proc/self/maps") as f:
            lines = f.read().splitlines()
    except OSError:
        return None
    found: list[str] = []
    for line in lines:
        fields = line.split(None, 5)  # address perms offset dev inode [path]
        if len(fields) == 6 and os.path.basename(fields[5]).startswith(_OPENMP_RUNTIMES) and fields[5] not in found:
            found.append(fields[5])
    ours = [path for path in found if path.startswith(torch_dir)]
    return (ours or found or [None])[0]


_GOMP_BODY = ctypes.CFUNCTYPE(None, ctypes.c_void_p)  # the parallel region's body: void (*)(void *)


@functools.cache
def _gomp_parallel(torch_dir: str) -> Any:
    """``GOMP_parallel(body, data, num_threads, flags)`` of torch's OpenMP runtime, or None;
    looked up once per process (the runtime does not change once torch is imported)."""
    path = _loaded_openmp_runtime(torch_dir)
    if path is None:
        return None
    try:
        parallel = ctypes.CDLL(path).GOMP_parallel
    except (OSError, AttributeError):
        return None
    parallel.argtypes = [_GOMP_BODY, ctypes.c_void_p, ctypes.c_uint, ctypes.c_uint]
    parallel.restype = None
    return parallel


def flush_denormals_on_intra_op_threads() -> bool:
    """Set flush-to-zero on every intra-op thread of the calling thread's OpenMP pool.

    ``torch.set_flush_denormal`` sets only the calling thread's MXCSR. Threads that
    torch's OpenMP pool started before that call (any large op does: building a model,
    ``torch.randn``) keep producing denormals, so a Python user who built a model and
    then a :class:`~rtdetr.infer.Detector` or Trainer ran half of each multi-threaded op
    slowly (measured: 5 of 10 million results stayed denormal on 2 threads). Here one
    OpenMP parallel region over the pool runs ``torch.set_flush_denormal(True)`` on each
    of its threads, through the runtime's ``GOMP_parallel`` entry point.

    Returns False where it could not be done (no OpenMP runtime found, e.g. not Linux):
    the calling thread still flushes; pool threads created later inherit it.
    """
    import torch

    threads = torch.get_num_threads()
    if threads <= 1:
        return True
    parallel = _gomp_parallel(os.path.dirname(torch.__file__))
    if parallel is None:
        return False
    # ctypes takes the GIL in each thread for the callback and releases it in this one
    # around the call, so the pool's threads run it one after another.
    parallel(_GOMP_BODY(lambda _data: torch.set_flush_denormal(True)), None, threads, 0)
    return True


_setup_lock = threading.Lock()
_malloc_kept: bool | None = None  # keep_freed_memory()'s answer, once asked


def setup_cpu_runtime(
    device: str | torch.device = "cpu", *, threads: int | None = None, keep_memory: bool = False
) -> None:
    """The CPU set-up every entry point shares; idempotent, cheap to call again.

    * flush denormals to zero (``torch.set_flush_denormal``): small random or
      decaying weights drive activations into denormal floats, which made CPU
      training steps ~14x and inference up to 17x slower. The setting is per
      thread (the x86 MXCSR register): threads created later inherit it, but the
      intra-op threads torch has already started do not, so it is set on those too
      (:func:`flush_denormals_on_intra_op_threads`). Call this from the thread that
      runs the model. Done for every device: the pre/post-processing of a GPU run
      is CPU math too.
    * ``threads``: torch intra-op threads (None leaves torch's default, all cores).
    * ``keep_memory``: :func:`keep_freed_memory` (glibc keeps freed blocks; process-wide,
      applied once, only for a CPU ``device``; best before the first big allocation).
    """
    import torch

    global _malloc_kept
    device = torch.device(device)
    if threads is not None:
        if threads < 1:
            raise UserError(f"threads must be >= 1, got {threads}")
        if torch.get_num_threads() != threads:
            torch.set_num_threads(threads)
    # False where unsupported (non-x86 without FTZ); nothing to do then.
    if torch.set_flush_denormal(True):
        flush_denormals_on_intra_op_threads()
    if keep_memory and device.type == "cpu":
        with _setup_lock:
            if _malloc_kept is None:
                _malloc_kept = keep_freed_memory()

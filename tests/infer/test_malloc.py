"""keep_freed_memory: big tensors stop being page-faulted in again on every allocation."""

import subprocess
import sys
import textwrap

import pytest

_SCRIPT = textwrap.dedent(
    """
    import resource, sys, threading
    import torch
    from rtdetr.runtime import keep_freed_memory  # what rtdetr.infer re-exports; no torchvision import

    applied = keep_freed_memory() if sys.argv[1] == "keep" else False
    faults = []

    def work():  # a worker thread, like the server's batcher
        for i in range(20):
            before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
            x = torch.ones(64 * 2**20 // 4)  # 64 MiB: above glibc's largest mmap threshold
            y = x * 2  # and a second one, as an op's output
            del x, y
            if i >= 4:
                faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)

    t = threading.Thread(target=work)
    t.start()
    t.join()
    print(applied, sum(faults))
    """
)


def _run(mode: str) -> tuple[str, int]:
    out = subprocess.run([sys.executable, "-c", _SCRIPT, mode], capture_output=True, text=True, check=True).stdout
    applied, faults = out.split()
    return applied, int(faults)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc malloc tuning is Linux-only")
def test_keep_freed_memory_reuses_big_blocks():
    default_applied, default_faults = _run("default")
    applied, faults = _run("keep")
    if applied != "True":
        pytest.skip("not glibc")
    assert default_applied == "False"
    # default: both 64 MiB tensors are fresh mmaps, page-faulted in every time (~16k faults
    # each with 4 KiB pages); kept: they reuse the heap, which only grows now and then
    # (fragmented by other allocations) in the first rounds
    assert faults < default_faults // 3

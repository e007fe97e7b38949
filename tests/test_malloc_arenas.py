"""The daemon caps glibc's malloc arenas (``daemon.limit_malloc_arenas``): threads that
allocate at once then share two arenas instead of taking one each. Checked in a fresh
process with glibc's own report of its heaps (``malloc_info``)."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
from pathlib import Path

import pytest

PROBE = r"""
import ctypes, sys, threading
from syncd.daemon import limit_malloc_arenas
if sys.argv[1] == "capped":
    assert limit_malloc_arenas()
barrier = threading.Barrier(8)
def churn():
    barrier.wait()
    for _ in range(2000):                        # contended mallocs: glibc hands out arenas
        blobs = [bytearray(200_000) for _ in range(4)]
        del blobs
threads = [threading.Thread(target=churn) for _ in range(8)]
for t in threads: t.start()
for t in threads: t.join()
libc = ctypes.CDLL(None)
libc.fopen.restype = ctypes.c_void_p
libc.fopen.argtypes = [ctypes.c_char_p, ctypes.c_char_p]
libc.malloc_info.argtypes = [ctypes.c_int, ctypes.c_void_p]
libc.fclose.argtypes = [ctypes.c_void_p]
stream = libc.fopen(sys.argv[2].encode(), b"w")
libc.malloc_info(0, stream)
libc.fclose(stream)
"""


def _heaps(tmp_path: Path, mode: str) -> int:
    report = tmp_path / f"{mode}.xml"
    env = {k: v for k, v in os.environ.items() if k != "MALLOC_ARENA_MAX"}
    subprocess.run([sys.executable, "-c", PROBE, mode, str(report)], check=True, env=env, timeout=120)
    return report.read_text().count("<heap nr=")


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="malloc arenas are glibc's; this C library is not")
def test_threads_share_two_arenas(tmp_path: Path) -> None:
    assert _heaps(tmp_path, "default") > 2      # (the probe makes glibc hand out arenas)
    assert _heaps(tmp_path, "capped") <= 2


def test_the_environment_wins(monkeypatch: pytest.MonkeyPatch) -> None:
    from syncd.daemon import limit_malloc_arenas

    monkeypatch.setenv("MALLOC_ARENA_MAX", "4")
    assert limit_malloc_arenas() is False

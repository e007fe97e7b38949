"""The network-namespace harness (tests/netns.py) keeps its promises: isolation, cut and
restore, teardown even when the test fails, a clear skip where it cannot run."""

from __future__ import annotations

import subprocess
import sys

import pytest

import tests.netns as netns
from tests.netns import NetnsLan, require_netns


def _namespaces() -> set[str]:
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    return {line.split()[0] for line in out.splitlines() if line.strip()}


def test_skip_reason_without_root(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(netns, "_UNAVAILABLE", [])
    monkeypatch.setattr(netns.os, "geteuid", lambda: 1000)
    assert "root" in (netns.netns_unavailable() or "")
    with pytest.raises(pytest.skip.Exception, match="root"):
        require_netns()


def test_teardown_even_when_the_test_fails() -> None:
    require_netns()
    with pytest.raises(RuntimeError, match="boom"):
        with NetnsLan(2) as lan:
            names = {lan.bridge_ns, *(node.name for node in lan.nodes)}
            assert names <= _namespaces()
            proc = lan.nodes[0].popen([sys.executable, "-c", "import time; time.sleep(600)"])  # wait-ok: a child process that idles until the teardown kills it
            raise RuntimeError("boom")
    assert not names & _namespaces()
    assert proc.poll() is not None, "processes are stopped before the namespaces go"


def _reach(node: netns.Node, address: str) -> bool:
    code = f"import socket; s = socket.create_connection(({address!r}, 9), timeout=2)"
    result = node.run([sys.executable, "-c", code], check=False)
    # "Connection refused" means the packet got there and back; unreachable means it did not.
    return "ConnectionRefusedError" in result.stderr


def test_nodes_reach_each_other_and_nothing_else() -> None:
    require_netns()
    with NetnsLan(2) as lan:
        a, b = lan.nodes
        assert a.address.startswith("198.18.") and b.address.startswith("198.18.")
        assert _reach(a, b.address)
        assert a.run(["ip", "route", "show", "default"]).stdout.strip() == ""
        outside = a.run(["ip", "route", "get", "192.0.2.1"], check=False)
        assert outside.returncode != 0 and "unreachable" in outside.stderr.lower()
        mcast = a.run(["ip", "route", "get", "224.0.0.251"], check=False)
        assert mcast.returncode == 0 and "dev eth0" in mcast.stdout

        b.cut()
        assert not _reach(a, b.address)
        b.restore()
        assert _reach(a, b.address)

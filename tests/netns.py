"""A private LAN of network namespaces on one Linux bridge, for tests with real networking.

::

    from tests.netns import NetnsLan, JsonLines, require_netns

    require_netns()                     # pytest.skip with the reason if we cannot
    with NetnsLan(3) as lan:            # sd-<token>-1 .. -3 on bridge sd-<token>-br
        a, b, c = lan.nodes
        proc = a.popen([sys.executable, "script.py"])   # runs inside a's namespace
        out = JsonLines(proc)                           # JSON lines, waited on
        out.wait_for(lambda e: e["event"] == "ready", 30, "a ready")
        c.cut()                         # unplug c's cable (the bridge port goes down)
        c.restore()
        lan.isolate(a, c)               # a and c no longer hear each other; both still hear b
        b.shape(2000)                   # b's link runs at 2 Mbit/s each way (tc tbf)

Layout: the bridge ``br0`` lives in its own namespace ``sd-<token>-br`` (so nothing
touches the host's interfaces or firewall); node ``k`` is namespace ``sd-<token>-k``
with ``lo`` and ``eth0`` (the far end of a veth pair whose near end ``p<k>`` is a port
of the bridge), address ``198.18.<run>.<k>/24``. Only 198.18.0.0/15 (RFC 2544
benchmarking space) is used, no namespace has a default route and the bridge has no
uplink: nothing can leave the machine. Multicast is on (``eth0`` multicast flag, a
``224.0.0.0/4`` route on ``eth0``, bridge multicast snooping off so link-local
multicast is flooded as on a plain switch; STP off and forward delay 0, so ports
forward at once; ``promote_secondaries`` on, so that deleting the first address of
``eth0`` keeps the others, as a lease change should).

Everything is torn down by ``close()`` (``with`` exit, and ``atexit`` as a safety
net): processes started with ``popen`` are terminated (then killed), then the
namespaces are deleted, which deletes their veths. Needs root (CAP_NET_ADMIN and
CAP_SYS_ADMIN) and ``ip`` from iproute2; :func:`require_netns` skips otherwise.
"""

from __future__ import annotations

import atexit
import json
import os
import secrets
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import IO, Any

import pytest

__all__ = ["NetnsLan", "Node", "JsonLines", "netns_unavailable", "require_netns"]

_IP = shutil.which("ip") or "/usr/sbin/ip"
_TC = shutil.which("tc") or "/usr/sbin/tc"
_UNAVAILABLE: list[str | None] = []  # cached result of netns_unavailable()


def _ip(*args: str, check: bool = True, timeout: float = 30.0) -> subprocess.CompletedProcess[str]:
    result = subprocess.run([_IP, *args], capture_output=True, text=True, timeout=timeout)
    if check and result.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)} failed ({result.returncode}): {result.stderr.strip()}")
    return result


def _tc(namespace: str, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run([_IP, "netns", "exec", namespace, _TC, *args], capture_output=True, text=True, timeout=30)
    if check and result.returncode != 0:
        raise RuntimeError(f"tc {' '.join(args)} in {namespace} failed ({result.returncode}): {result.stderr.strip()}")
    return result


def netns_unavailable() -> str | None:
    """Why namespaces cannot be used here, or None if they can (probed once)."""
    if _UNAVAILABLE:
        return _UNAVAILABLE[0]
    reason: str | None = None
    if os.geteuid() != 0:
        reason = "network namespaces need root (CAP_NET_ADMIN, CAP_SYS_ADMIN)"
    elif shutil.which("ip") is None and not os.path.exists(_IP):
        reason = "the `ip` command (iproute2) is not installed"
    else:
        probe = f"sd-{secrets.token_hex(3)}-probe"
        made = _ip("netns", "add", probe, check=False)
        if made.returncode != 0:
            reason = f"cannot create a network namespace: {made.stderr.strip() or made.returncode}"
        else:
            veth = _ip("-n", probe, "link", "add", "pa", "type", "veth", "peer", "name", "pb", check=False)
            bridge = _ip("-n", probe, "link", "add", "br0", "type", "bridge", check=False)
            _ip("netns", "del", probe, check=False)
            if veth.returncode != 0:
                reason = f"cannot create veth pairs: {veth.stderr.strip()}"
            elif bridge.returncode != 0:
                reason = f"cannot create a bridge: {bridge.stderr.strip()}"
    _UNAVAILABLE.append(reason)
    return reason


def require_netns() -> None:
    """``pytest.skip`` with the reason when namespaces cannot be used here."""
    reason = netns_unavailable()
    if reason is not None:
        pytest.skip(reason)


@dataclass(eq=False)
class Node:
    """One device: a namespace with ``lo`` and ``eth0`` at ``address``."""

    lan: NetnsLan
    index: int
    name: str
    address: str
    ifname: str = "eth0"

    @property
    def bridge_port(self) -> str:
        return f"p{self.index}"

    def command(self, cmd: Sequence[str]) -> list[str]:
        """``cmd`` prefixed to run inside this namespace."""
        return [_IP, "netns", "exec", self.name, *cmd]

    def run(
        self, cmd: Sequence[str], *, check: bool = True, timeout: float = 30.0, input: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        """Run ``cmd`` in this namespace and wait for it."""
        return subprocess.run(
            self.command(cmd), capture_output=True, text=True, timeout=timeout, check=check, input=input
        )

    def popen(self, cmd: Sequence[str], **kwargs: Any) -> subprocess.Popen[str]:
        """Start ``cmd`` in this namespace (stdin/stdout pipes, text, stderr to a log file
        ``lan.logs[name-k]`` unless given); it is stopped at teardown."""
        log_path = None
        if "stderr" not in kwargs:
            log_path = os.path.join(self.lan.log_dir, f"{self.name}-{len(self.lan.processes)}.stderr")
            kwargs["stderr"] = open(log_path, "w")  # noqa: SIM115 - closed at teardown
        kwargs.setdefault("stdin", subprocess.PIPE)
        kwargs.setdefault("stdout", subprocess.PIPE)
        kwargs.setdefault("text", True)
        kwargs.setdefault("bufsize", 1)
        proc: subprocess.Popen[str] = subprocess.Popen(self.command(cmd), **kwargs)
        self.lan.processes.append((proc, kwargs["stderr"] if log_path else None, log_path))
        return proc

    def add_address(self, address: str, prefix: int = 24) -> None:
        """Give ``eth0`` another address (must be in 198.18.0.0/15)."""
        _check_private(address)
        _ip("-n", self.name, "addr", "add", f"{address}/{prefix}", "dev", self.ifname)

    def del_address(self, address: str, prefix: int = 24) -> None:
        """Take an address off ``eth0`` (a DHCP lease lost, a Wi-Fi network left)."""
        _ip("-n", self.name, "addr", "del", f"{address}/{prefix}", "dev", self.ifname)

    def cut(self) -> None:
        """Unplug this node: its bridge port goes down, ``eth0`` loses carrier. The node's
        processes keep running and keep their address (a device out of range)."""
        _ip("-n", self.lan.bridge_ns, "link", "set", self.bridge_port, "down")

    def restore(self) -> None:
        """Plug it back in."""
        _ip("-n", self.lan.bridge_ns, "link", "set", self.bridge_port, "up")
        _wait(lambda: self._operstate() == "UP", 10.0, f"{self.name} {self.ifname} to come back up")

    def isolated(self) -> bool:
        """Whether this node's bridge port is isolated (see :meth:`NetnsLan.isolate`)."""
        out = _ip("-n", self.lan.bridge_ns, "-d", "-j", "link", "show", "dev", self.bridge_port).stdout
        info = json.loads(out)[0].get("linkinfo", {}).get("info_slave_data", {})
        return bool(info.get("isolated", False))

    def shape(self, rate_kbit: int, burst_bytes: int = 16384) -> None:
        """Throttle this node's link to ``rate_kbit`` kbit/s in each direction (a slow
        Wi-Fi link): a ``tbf`` qdisc on ``eth0`` (what it sends) and on its bridge port
        (what it receives). Raises RuntimeError if ``tc`` or ``sch_tbf`` is missing."""
        if not os.path.exists(_TC):
            raise RuntimeError("`tc` (iproute2) is not installed")
        for namespace, device in ((self.name, self.ifname), (self.lan.bridge_ns, self.bridge_port)):
            _tc(
                namespace, "qdisc", "replace", "dev", device, "root", "tbf",
                "rate", f"{rate_kbit}kbit", "burst", str(burst_bytes), "latency", "1s",
            )

    def unshape(self) -> None:
        """Remove :meth:`shape`'s throttle."""
        for namespace, device in ((self.name, self.ifname), (self.lan.bridge_ns, self.bridge_port)):
            _tc(namespace, "qdisc", "del", "dev", device, "root", check=False)

    def can_connect(self, address: str, port: int, timeout: float = 1.0) -> bool:
        """Whether a TCP connection from this namespace to ``address:port`` opens within
        ``timeout`` seconds."""
        script = "import socket, sys; socket.create_connection((sys.argv[1], int(sys.argv[2])), float(sys.argv[3]))"
        return self.run([sys.executable, "-c", script, address, str(port), str(timeout)],
                        check=False, timeout=timeout + 30).returncode == 0

    def tcp_connections(self, port: int) -> list[dict[str, int | str]]:
        """This namespace's established TCP connections to or from ``port``, with the
        kernel's byte counters (``ss -tin``): ``local``, ``peer``, ``bytes_received``,
        ``bytes_acked`` (what the peer acknowledged of what we sent)."""
        ss = shutil.which("ss")
        if ss is None:
            raise RuntimeError("`ss` (iproute2) is not installed")
        out = self.run([ss, "-tinH", "state", "established"]).stdout
        found: list[dict[str, int | str]] = []
        lines = out.splitlines()
        for index, line in enumerate(lines):
            fields = line.split()
            if len(fields) < 4 or line[:1].isspace():
                continue
            local, peer = fields[2], fields[3]
            if not (local.endswith(f":{port}") or peer.endswith(f":{port}")):
                continue
            info = lines[index + 1] if index + 1 < len(lines) and lines[index + 1][:1].isspace() else ""
            row: dict[str, int | str] = {"local": local, "peer": peer, "bytes_received": 0, "bytes_acked": 0}
            for item in info.split():
                key, _, value = item.partition(":")
                if key in ("bytes_received", "bytes_acked") and value.isdigit():
                    row[key] = int(value)
            found.append(row)
        return found

    def _operstate(self) -> str:
        out = _ip("-n", self.name, "-j", "link", "show", self.ifname, check=False).stdout
        try:
            return str(json.loads(out)[0].get("operstate", ""))
        except (ValueError, IndexError, KeyError):
            return ""


@dataclass(eq=False)
class NetnsLan:
    """``count`` namespaces on one bridge; a context manager (see the module docstring)."""

    count: int
    run: int = field(default_factory=lambda: secrets.randbelow(256))
    token: str = field(default_factory=lambda: secrets.token_hex(3))
    nodes: list[Node] = field(default_factory=list)
    processes: list[tuple[subprocess.Popen[str], IO[str] | None, str | None]] = field(default_factory=list)
    log_dir: str = ""
    _namespaces: list[str] = field(default_factory=list)
    _closed: bool = False

    def __post_init__(self) -> None:
        if not 1 <= self.count <= 250:
            raise ValueError("between 1 and 250 nodes")
        if not 0 <= self.run <= 255:
            raise ValueError("run must be 0..255 (the third octet of 198.18.<run>.<k>)")

    @property
    def bridge_ns(self) -> str:
        return f"sd-{self.token}-br"

    @property
    def subnet(self) -> str:
        return f"198.18.{self.run}.0/24"

    def __enter__(self) -> NetnsLan:
        try:
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def start(self) -> None:
        import tempfile

        self.log_dir = tempfile.mkdtemp(prefix=f"sd-{self.token}-")
        atexit.register(self.close)
        br = self.bridge_ns
        self._add_ns(br)
        _ip("-n", br, "link", "set", "lo", "up")
        _ip(
            "-n", br, "link", "add", "name", "br0", "type", "bridge",
            "stp_state", "0", "forward_delay", "0", "mcast_snooping", "0",
        )
        _ip("-n", br, "link", "set", "br0", "up")
        for k in range(1, self.count + 1):
            name = f"sd-{self.token}-{k}"
            node = Node(self, k, name, f"198.18.{self.run}.{k}")
            self._add_ns(name)
            _ip("-n", name, "link", "set", "lo", "up")
            _ip("-n", br, "link", "add", node.bridge_port, "type", "veth", "peer", "name", node.ifname, "netns", name)
            _ip("-n", br, "link", "set", node.bridge_port, "master", "br0")
            _ip("-n", br, "link", "set", node.bridge_port, "up")
            # Removing an interface's first address would otherwise remove every other
            # address of the subnet with it (a "move" to a new lease would lose both).
            node.run(["sysctl", "-qw", f"net.ipv4.conf.{node.ifname}.promote_secondaries=1"])
            _ip("-n", name, "addr", "add", f"{node.address}/24", "dev", node.ifname)
            _ip("-n", name, "link", "set", node.ifname, "multicast", "on")
            _ip("-n", name, "link", "set", node.ifname, "up")
            _ip("-n", name, "route", "add", "224.0.0.0/4", "dev", node.ifname)
            self.nodes.append(node)
        for node in self.nodes:
            _wait(lambda n=node: n._operstate() == "UP", 10.0, f"{node.name} {node.ifname} up")  # type: ignore[misc]
            routes = _ip("-n", node.name, "route", "show", "default").stdout.strip()
            assert not routes, f"{node.name} must have no default route, has {routes!r}"

    def _add_ns(self, name: str) -> None:
        _ip("netns", "add", name)
        self._namespaces.append(name)

    def close(self) -> None:
        """Stop every process, delete every namespace. Safe to call twice; never raises."""
        if self._closed:
            return
        self._closed = True
        for proc, _, _ in self.processes:
            if proc.poll() is None:
                proc.terminate()
        deadline = time.monotonic() + 10.0
        for proc, stderr, _ in self.processes:
            try:
                proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
            for stream in (proc.stdin, proc.stdout):
                if stream is not None:
                    try:
                        stream.close()
                    except OSError:
                        pass
            if stderr is not None:
                stderr.close()
        for name in reversed(self._namespaces):
            _ip("netns", "del", name, check=False)
        self._namespaces.clear()
        if self.log_dir and not os.environ.get("SYNCD_KEEP_NETNS_LOGS"):
            shutil.rmtree(self.log_dir, ignore_errors=True)
        atexit.unregister(self.close)

    def isolate(self, *nodes: Node) -> None:
        """Put these nodes' bridge ports in isolation (the kernel bridge's ``isolated``
        port flag, as Wi-Fi client isolation does): isolated nodes no longer exchange
        any frame with one another (unicast, broadcast or multicast, so no ARP and no
        mDNS either), while each still reaches every node that is not isolated. With
        three nodes, ``lan.isolate(a, c)`` leaves ``b`` the only one both can see."""
        for node in nodes:
            _ip("-n", self.bridge_ns, "link", "set", "dev", node.bridge_port, "type", "bridge_slave", "isolated", "on")

    def unisolate(self, *nodes: Node) -> None:
        """Undo :meth:`isolate` for these nodes."""
        for node in nodes:
            _ip("-n", self.bridge_ns, "link", "set", "dev", node.bridge_port, "type", "bridge_slave", "isolated", "off")

    def stderr_of(self, proc: subprocess.Popen[str]) -> str:
        """What a process started with ``popen`` wrote on stderr so far (for failure messages)."""
        for candidate, _, path in self.processes:
            if candidate is proc and path:
                with open(path) as handle:
                    return handle.read()
        return ""


def _check_private(address: str) -> None:
    import ipaddress

    if ipaddress.ip_address(address) not in ipaddress.ip_network("198.18.0.0/15"):
        raise ValueError(f"test addresses must be in 198.18.0.0/15, got {address}")


def _wait(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.05)  # wait-ok: a poll under the deadline above


class JsonLines:
    """Collects a process's stdout, one JSON object per line, on a reader thread;
    :meth:`wait_for` blocks until a matching object arrives or the deadline passes."""

    def __init__(self, proc: subprocess.Popen[str], label: str = "") -> None:
        assert proc.stdout is not None
        self.proc = proc
        self.label = label or str(proc.pid)
        self.lines: list[dict[str, Any]] = []
        self._cond = threading.Condition()
        self._eof = False
        self._thread = threading.Thread(target=self._read, args=(proc.stdout,), daemon=True)
        self._thread.start()

    def _read(self, stream: IO[str]) -> None:
        try:
            for raw in stream:
                try:
                    obj = json.loads(raw)
                except ValueError:
                    obj = {"event": "non-json", "text": raw.rstrip("\n")}
                with self._cond:
                    self.lines.append(obj)
                    self._cond.notify_all()
        except (OSError, ValueError):
            pass
        finally:
            with self._cond:
                self._eof = True
                self._cond.notify_all()

    def send(self, line: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()

    def find(self, match: Callable[[dict[str, Any]], bool], start: int = 0) -> dict[str, Any] | None:
        with self._cond:
            return next((obj for obj in self.lines[start:] if match(obj)), None)

    def wait_for(
        self, match: Callable[[dict[str, Any]], bool], timeout: float, what: str, *, start: int = 0
    ) -> dict[str, Any]:
        """The first object (from index ``start``) for which ``match`` is true."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                found = next((obj for obj in self.lines[start:] if match(obj)), None)
                if found is not None:
                    return found
                remaining = deadline - time.monotonic()
                if remaining <= 0 or (self._eof and self.proc.poll() is not None):
                    state = "exited" if self.proc.poll() is not None else "running"
                    raise AssertionError(
                        f"[{self.label}] timed out after {timeout}s waiting for {what} ({state}); "
                        f"lines: {self.lines[-20:]}"
                    )
                self._cond.wait(min(remaining, 0.5))

    def __len__(self) -> int:
        with self._cond:
            return len(self.lines)

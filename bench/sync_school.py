"""Sync a real school from one daemon to a fresh one over loopback, beside Morango.

1. load the Kolibri school's raw logs into daemon A (bench/school.py), rebuild its rows;
2. A creates a facility, a fresh daemon B joins it;
3. B syncs from A: full, then no-op, then after ~1.4 % new logs written on A (new
   sessions on new content), five times more each after as many, then once after as many
   sessions on videos the learners had watched (their content's group is refolded whole:
   the usual traffic of a school day, which the targets do not cover).
Bytes on the wire are the TCP payload both ways (TLS records, HTTP and all), counted by
a relay between B and A; the "warm" figures reuse B's keep-alive connection, the fresh
figure is the first session (connection set-up included). Peak RSS is each process with
its children (import and rebuild workers), the larger of the high-water marks (VmHWM)
at the end and the largest sum sampled every 20 ms from the facility's creation on (a
child that ended before the end counts so), up to the last sync of new content. Every
figure is printed beside Morango's.

usage: python bench/sync_school.py [S|L] [--new-fraction 0.014]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any, Callable

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from common import Daemon  # noqa: E402
from school import load, unpack  # noqa: E402

from tests.daemon_harness import UnixHTTP  # noqa: E402

MORANGO = {  # Kolibri 0.19.5 / Morango 0.8.15 on this machine type (shared/data/README.md)
    "S": {"full_s": 145.0, "full_mb": 41.7, "noop_s": 10.0, "incr_s": 11.6, "receiver_mb": 224.0},
    "L": {"full_s": 945.0, "full_mb": 380.0, "noop_s": 11.6, "incr_s": 20.8, "receiver_mb": 1237.0, "server_mb": 636.0},
}
REPEATS = 5  # incremental syncs after the first, each after as many new logs
TARGETS = {"S": {"full_s": 3.0, "full_mb": 6.0, "noop_s": 0.05, "noop_kb": 2.0, "incr_s": 0.1, "receiver_mb": 120.0},
           "L": {"full_s": 20.0, "receiver_mb": 200.0}}


class Relay:
    """A TCP relay counting the bytes each way (runs its own event loop in a thread)."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.up = 0     # client -> server
        self.down = 0   # server -> client
        self.port = 0
        self._ready = threading.Event()
        self._loop = asyncio.new_event_loop()
        threading.Thread(target=self._run, daemon=True).start()
        self._ready.wait()

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        server = self._loop.run_until_complete(asyncio.start_server(self._handle, "127.0.0.1", 0))
        self.port = server.sockets[0].getsockname()[1]
        self._ready.set()
        self._loop.run_forever()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter, upward: bool) -> None:
            try:
                while data := await src.read(65536):
                    if upward:
                        self.up += len(data)
                    else:
                        self.down += len(data)
                    dst.write(data)
                    await dst.drain()
            finally:
                dst.close()

        await asyncio.gather(pipe(reader, up_writer, True), pipe(up_reader, writer, False), return_exceptions=True)

    def total(self) -> int:
        return self.up + self.down


def hwm_mb(pid: int) -> float:
    """Peak RSS (VmHWM) of a process and its children alive now, MB."""
    import psutil

    total = 0.0
    for proc in [psutil.Process(pid), *psutil.Process(pid).children(recursive=True)]:
        for line in Path(f"/proc/{proc.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                total += int(line.split()[1]) / 1024
    return total


class PeakRss:
    """The largest RSS of a process and its children together, sampled every 20 ms in a
    thread: children that end before the benchmark does (import and rebuild workers) count
    with what they held while they ran (VmHWM at the end would leave them out)."""

    def __init__(self, pid: int) -> None:
        self.pid, self.peak = pid, 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        import psutil

        while not self._stop.wait(0.02):
            try:
                main = psutil.Process(self.pid)
                total = sum(p.memory_info().rss for p in [main, *main.children(recursive=True)])
            except psutil.Error:
                continue  # (a child ended while it was read)
            self.peak = max(self.peak, total / 2**20)

    def stop(self) -> float:
        self._stop.set()
        self._thread.join()
        return self.peak


def sync(http: UnixHTTP, relay: Relay, address: str) -> tuple[float, int, dict[str, Any]]:
    before = relay.total()
    started = time.perf_counter()
    status, answer = http.json("POST", "/sync", {"peer": address})
    elapsed = time.perf_counter() - started
    assert status == 200, answer
    (session,) = answer["sessions"]
    assert session["outcome"] == "ok", session
    return elapsed, relay.total() - before, session


NODE_ID = "32a941fb77c2576e8f6b294cde4c3b0c"
# (user, i) -> the video the i-th new session (of ``write_new_logs``) is on: content id and channel
VideoPicker = Callable[[str, int], tuple[str, str]]


def new_video(user: str, i: int) -> tuple[str, str]:
    return uuid.uuid4().hex, "6199dde695db4ee4ab392222d5af1e5c"


def write_new_logs(http: UnixHTTP, users: list[str], count: int, video: VideoPicker = new_video) -> None:
    """``count`` logs written on the learners in turn: each a video session started and
    updated once (two logs)."""
    for i in range(count // 2):
        user = users[i % len(users)]
        content_id, channel_id = video(user, i)
        start = {"node_id": NODE_ID, "channel_id": channel_id, "kind": "video", "content_id": content_id}
        status, body = http.json("POST", "/api/logger/trackprogress/", start, user=user)
        assert status == 200, body
        status, body = http.json("PUT", f"/api/logger/trackprogress/{body['session_id']}/",
                                 {"progress_delta": 0.2, "time_spent_delta": 30.0}, user=user)
        assert status == 200, body


def seen_videos(http: UnixHTTP, users: list[str]) -> tuple[list[str], VideoPicker]:
    """The learners who have watched a video, and a picker of the videos they watched:
    sessions on them are a school's usual traffic, where the receiver refolds the video's
    whole group (decoding its records) rather than starting a new one."""
    videos = {user: [(r["content_id"], r["channel_id"])
                     for r in http.get(f"/api/logger/contentsummarylog/?user_id={user}") if r["kind"] == "video"]
              for user in users}
    watched = [user for user in users if videos[user]]

    def pick(user: str, i: int) -> tuple[str, str]:
        return videos[user][(i // len(watched)) % len(videos[user])]

    return watched, pick


def ratio(ours: float, theirs: float) -> str:
    """Morango's figure over ours: above 1, syncd is better by that factor."""
    if ours <= 0:
        return "-"
    factor = theirs / ours
    return f"{factor:,.0f}x" if factor >= 10 else f"{factor:.2f}x"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("school", nargs="?", default="S", choices=["S", "L"])
    parser.add_argument("--new-fraction", type=float, default=0.014)
    args = parser.parse_args()
    work = Path(__file__).resolve().parent / "out"
    db = unpack(args.school, work)
    a = Daemon()
    t = time.perf_counter()
    raw = load(db, a.root / "state")
    print(f"school {args.school}: {raw} raw logs loaded into A in {time.perf_counter() - t:.1f} s", flush=True)
    a.start()
    b = Daemon().start()
    try:
        ha, hb = UnixHTTP(a.socket, timeout=3600), UnixHTTP(b.socket, timeout=3600)
        status, report = ha.json("POST", "/rebuild")
        assert status == 200, report
        status, made = ha.json("POST", "/facility", {"action": "create", "name": f"School {args.school}"})
        assert status in (200, 201), made
        peak_a, peak_b = PeakRss(a.pid), PeakRss(b.pid)
        relay = Relay(a.ready["sync_port"])
        address = f"127.0.0.1:{relay.port}"
        status, joined = hb.json("POST", "/facility", {"action": "join", "code": made["join_code"], "peer": address})
        assert status == 200, joined
        join_bytes = relay.total()
        full_s, full_bytes, full = sync(hb, relay, address)
        noops = [sync(hb, relay, address) for _ in range(5)]
        noop_s = sorted(n[0] for n in noops)[2]
        noop_bytes = sorted(n[1] for n in noops)[2]
        users = [p.split(":", 1)[1] for p in ha.get("/status")["digests"] if p.startswith("user:")]
        new = max(2, int(raw * args.new_fraction))
        write_new_logs(ha, users, new)
        incr_s, incr_bytes, incr = sync(hb, relay, address)
        # The same again, as a school's day goes: each sync leaves the receiver's
        # partitions one stored update longer, which the next import loads.
        again = []
        for _ in range(REPEATS):
            write_new_logs(ha, users, new)
            again.append(sync(hb, relay, address)[0])
        # The larger of the two: VmHWM catches a peak between samples, sampling a child
        # that ended. (Before the revisits below: the targets are for the syncs above.)
        rss_a, rss_b = max(hwm_mb(a.pid), peak_a.stop()), max(hwm_mb(b.pid), peak_b.stop())
        watched, seen = seen_videos(ha, users)
        write_new_logs(ha, watched, new, seen)
        revisit_s = sync(hb, relay, address)[0]
        revisit_rss_b = hwm_mb(b.pid)
        da, dbs = ha.get("/status")["digests"], hb.get("/status")["digests"]
        assert da == dbs, "A and B must hold byte-identical derived rows"
        m = MORANGO[args.school]
        print(json.dumps({"full": full, "incremental": incr}, indent=None)[:400])
        print(f"{'figure':<28}{'syncd':>14}{'Morango':>12}   Morango/syncd  target")
        print(f"{'full sync (s)':<28}{full_s:>14.2f}{m['full_s']:>12.1f}   {ratio(full_s, m['full_s']):<10} {TARGETS[args.school].get('full_s', '-')}")
        print(f"{'full sync bytes (MB)':<28}{full_bytes / 1e6:>14.2f}{m['full_mb']:>12.1f}   {ratio(full_bytes / 1e6, m['full_mb']):<10} {TARGETS[args.school].get('full_mb', '-')}"
              f"   (join handshake before it: {join_bytes} B; fresh TLS connection included)")
        print(f"{'no-op sync (s, median of 5)':<28}{noop_s:>14.4f}{m['noop_s']:>12.1f}   {ratio(noop_s, m['noop_s']):<10} {TARGETS[args.school].get('noop_s', '-')}")
        print(f"{'no-op sync bytes (KB, warm)':<28}{noop_bytes / 1e3:>14.2f}{'-':>12}   {'':<10} {TARGETS[args.school].get('noop_kb', '-')}")
        print(f"{'incremental (s), ' + str(new) + ' logs':<28}{incr_s:>14.3f}{m['incr_s']:>12.1f}   {ratio(incr_s, m['incr_s']):<10} {TARGETS[args.school].get('incr_s', '-')}"
              f"   ({incr_bytes / 1e3:.1f} KB)")
        print(f"{'  the same, again (s)':<28}{sorted(again)[len(again) // 2]:>14.3f}{m['incr_s']:>12.1f}   "
              f"{ratio(sorted(again)[len(again) // 2], m['incr_s']):<10} -      (median of the {REPEATS} that follow, "
              f"slowest {max(again):.3f})")
        print(f"{'  on content seen before (s)':<28}{revisit_s:>14.3f}{m['incr_s']:>12.1f}   "
              f"{ratio(revisit_s, m['incr_s']):<10} -      (as many logs, each a new session on a video the learner "
              f"has watched: its group is refolded whole; receiver peak after it {revisit_rss_b:.1f} MB)")
        print(f"{'receiver peak RSS (MB)':<28}{rss_b:>14.1f}{m['receiver_mb']:>12.1f}   {ratio(rss_b, m['receiver_mb']):<10} {TARGETS[args.school].get('receiver_mb', '-')}")
        print(f"{'sender peak RSS (MB)':<28}{rss_a:>14.1f}{m.get('server_mb', float('nan')):>12.1f}")
    finally:
        a.stop()
        b.stop()


if __name__ == "__main__":
    main()

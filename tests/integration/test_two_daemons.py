"""Two (or three) real daemons of one facility, syncing over HTTPS on loopback (issue 4).

* ``two_device_concurrent.json`` replayed on two daemons (D1's and D2's requests, at their
  recorded times through ``X-Syncd-Event-Time``), then D2 syncs with D1 twice: every
  session of both devices is kept on both, the summaries and mastery rows are the pure
  folds of SPEC §4 (computed here by the pure domain over both devices' writes),
  identical on both daemons.
* Identity: a state dir copied to a second machine (a cloned tablet image). With another
  machine id the copy takes a new device id; with the SAME machine id (the image includes
  /etc/machine-id) it does not. Both write, also to the same learner and the same
  session, then sync: no acknowledged write may be missing anywhere.
* Resume: D2 pulls a school of ~3,000 writes from D1 through a relay the test gates; D1
  is killed (SIGKILL) while the second delta frame is in flight, restarted, and the next
  sync completes with nothing lost, no duplicates and without re-sending what was
  already committed.
"""

from __future__ import annotations

import json
import random
import shutil
import socket
import string
import threading
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import pytest

from tests.corpus_replay import device_learners, replay_scenario
from tests.daemon_harness import DaemonProcess, short_tempdir, wait_until
from tests.logs.memory_driver import MemoryDevice

CORPUS = Path(__file__).resolve().parents[1] / "fixtures" / "corpus"
VIDEO = {
    "node_id": "32a941fb77c2576e8f6b294cde4c3b0c",
    "content_id": "c6f49ea527824f398f4d5d26faf19396",
    "channel_id": "6199dde695db4ee4ab392222d5af1e5c",
    "kind": "video",
}
TRACK = "/api/logger/trackprogress/"


# --- plumbing -----------------------------------------------------------------------------------

@pytest.fixture
def daemons() -> Iterator[list[DaemonProcess]]:
    made: list[DaemonProcess] = []
    yield made
    for d in made:
        d.cleanup()


def new_daemon(made: list[DaemonProcess], name: str, *, machine: str | None = None, start: bool = True) -> DaemonProcess:
    env = {"SYNCD_MACHINE_ID": machine} if machine else None
    d = DaemonProcess(short_tempdir(), name=name, env=env)
    made.append(d)
    return d.start() if start else d


def create_facility(d: DaemonProcess) -> dict[str, Any]:
    status, body = d.http.json("POST", "/facility", {"action": "create", "name": "Two Daemon School"})
    assert status == 201, body
    return dict(body)


def join(member: DaemonProcess, joiner: DaemonProcess) -> None:
    status, body = member.http.json("POST", "/facility", {"action": "invite", "file": True})
    assert status == 201, body
    status, body = joiner.http.json("POST", "/facility", {"action": "join_file", "join_file": body["join_file"]})
    assert status == 200, body


def sync(client: DaemonProcess, server: DaemonProcess | int) -> dict[str, Any]:
    port = server if isinstance(server, int) else server.ready["sync_port"]
    status, body = client.http.json("POST", "/sync", {"peer": f"127.0.0.1:{port}"})
    assert status == 200, body
    (report,) = body["sessions"]
    return dict(report)


def rows(d: DaemonProcess, model: str, **filters: str) -> list[dict[str, Any]]:
    query = "&".join(f"{k}={v}" for k, v in filters.items())
    found: list[dict[str, Any]] = d.http.get(f"/api/logger/{model}/" + (f"?{query}" if query else ""))
    return found


def by_id(found: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    out = {r["id"]: r for r in found}
    assert len(out) == len(found), f"duplicate row ids: {sorted(r['id'] for r in found)}"
    return out


def start(d: DaemonProcess, user: str, at: str) -> str:
    status, body = d.http.json("POST", TRACK, VIDEO, user=user, at=at)
    assert status == 200, body
    return str(body["session_id"])


def update(d: DaemonProcess, user: str, session_id: str, at: str, seconds: float, **extra: Any) -> None:
    status, body = d.http.json("PUT", f"{TRACK}{session_id}/", {"progress_delta": 0.001, "time_spent_delta": seconds,
                                                                **extra}, user=user, at=at)
    assert status == 200, body


# --- the corpus: two devices, concurrent edits ---------------------------------------------------

def _concurrent() -> dict[str, Any]:
    data: dict[str, Any] = json.loads((CORPUS / "two_device_concurrent.json").read_text())
    return data


@dataclass
class Replayed:
    users: dict[str, str] = field(default_factory=dict)                 # learner name -> user id
    sessions: dict[str, set[str]] = field(default_factory=dict)         # device -> session ids it created
    attempts: dict[str, set[str]] = field(default_factory=dict)         # device -> attempt ids it holds
    session_rows: dict[str, dict[str, Any]] = field(default_factory=dict)   # session id -> row before sync


def replay_device(scenario: dict[str, Any], name: str, send: Any, read_rows: Any, out: Replayed) -> None:
    """Replay one device's requests, learner by learner, each checked against that device's
    own rows before the sync (``rows_before_sync``), as the pure test does."""
    for learner, sub, user_id in device_learners(scenario, name):
        out.users[learner] = user_id

        def user_rows(model: str, user_id: str = user_id) -> list[dict[str, Any]]:
            return [row for row in read_rows(model) if row["user_id"] == user_id]

        replay_scenario(sub, send, user_rows)


def test_two_device_concurrent_on_two_real_daemons(daemons: list[DaemonProcess]) -> None:
    scenario = _concurrent()
    d1, d2 = new_daemon(daemons, "D1"), new_daemon(daemons, "D2")
    facility = create_facility(d1)
    join(d1, d2)
    dataset = facility["dataset_id"]
    devices = {"D1": d1, "D2": d2}

    # The pure folds: the domain alone, over both devices' writes (SPEC §3.4, §4 last column).
    pure = {"D1": MemoryDevice("1" * 64, dataset, seed=1), "D2": MemoryDevice("2" * 64, dataset, seed=2)}
    replayed = Replayed()
    for name in ("D1", "D2"):
        replay_device(scenario, name, pure[name].send, pure[name].read_rows, Replayed())
    pure["D1"].merge_from(pure["D2"])

    for name, d in devices.items():
        created: set[str] = set()

        def send(method: str, target: str, payload: Any, at: str, user: str | None, d: DaemonProcess = d,
                 created: set[str] = created) -> tuple[int, Any]:
            status, body = d.http.json(method, target, payload, user=user, at=at)
            if method == "POST" and target == TRACK and status == 200:
                created.add(body["session_id"])
            return status, body

        def read_rows(model: str, d: DaemonProcess = d) -> list[dict[str, Any]]:
            return rows(d, model)

        replay_device(scenario, name, send, read_rows, replayed)
        replayed.sessions[name] = created
        replayed.attempts[name] = set(by_id(rows(d, "attemptlog")))
        replayed.session_rows.update(by_id(rows(d, "contentsessionlog")))
    assert len(replayed.sessions["D1"]) == len(replayed.sessions["D2"]) == 4
    assert not replayed.sessions["D1"] & replayed.sessions["D2"]

    # D2 initiates, as in the corpus (pull then push); a second sync changes nothing.
    first = sync(d2, d1)
    assert first["outcome"] == "ok", first
    assert (first["partitions_in"], first["partitions_out"]) == (4, 4), first
    feeds = {name: d.status()["feed_seq"] for name, d in devices.items()}
    second = sync(d2, d1)
    assert second["outcome"] == "ok", second
    assert (second["partitions_in"], second["partitions_out"], second["records_in"]) == (0, 0, 0), second
    assert {name: d.status()["feed_seq"] for name, d in devices.items()} == feeds

    every_session = replayed.sessions["D1"] | replayed.sessions["D2"]
    every_attempt = replayed.attempts["D1"] | replayed.attempts["D2"]
    expected_summaries = sorted(pure["D1"].read_rows("contentsummarylog"), key=lambda r: str(r["id"]))
    expected_mastery = sorted(pure["D1"].read_rows("masterylog"), key=lambda r: str(r["id"]))
    for name, d in devices.items():
        sessions = by_id(rows(d, "contentsessionlog"))
        assert set(sessions) == every_session, f"{name} lacks sessions {every_session - set(sessions)}"
        for session_id, row in sessions.items():   # each session's own row is untouched by the merge
            assert row == replayed.session_rows[session_id], (name, session_id)
        assert set(by_id(rows(d, "attemptlog"))) == every_attempt, f"{name} lacks attempts"
        # Summaries and mastery rows are exactly the pure folds (ids included: same dataset).
        summaries = sorted(rows(d, "contentsummarylog"), key=lambda r: str(r["id"]))
        mastery = sorted(rows(d, "masterylog"), key=lambda r: str(r["id"]))
        assert summaries == expected_summaries, f"{name} summaries differ from the pure fold"
        assert mastery == expected_mastery, f"{name} mastery rows differ from the pure fold"
        check_spec_4(d, replayed.users)
    assert d1.status()["digests"] == d2.status()["digests"]


def check_spec_4(d: DaemonProcess, users: dict[str, str]) -> None:
    """SPEC §4's last column, value by value."""
    (video,) = rows(d, "contentsummarylog", user_id=users["td_video"])
    assert (video["start_timestamp"], video["end_timestamp"]) == (
        "2025-01-11T09:00:00.000000+00:00", "2025-01-11T10:00:10.000000+00:00")
    assert (video["progress"], video["time_spent"], video["completion_timestamp"]) == (0.8, 30.0, None), video

    user = users["td_ex_server_done"]
    (summary,) = rows(d, "contentsummarylog", user_id=user)
    assert (summary["progress"], summary["time_spent"]) == (1.0, 33.0), summary
    assert summary["completion_timestamp"] == "2025-01-11T10:00:12.000000+00:00"
    assert summary["end_timestamp"] == "2025-01-11T10:00:18.000000+00:00"
    (mastery,) = rows(d, "masterylog", user_id=user)
    assert (mastery["mastery_level"], mastery["complete"], mastery["time_spent"]) == (1, True, 33.0), mastery
    assert mastery["completion_timestamp"] == "2025-01-11T10:00:12.000000+00:00"
    assert mastery["end_timestamp"] == "2025-01-11T10:00:18.000000+00:00"
    assert len(rows(d, "attemptlog", user_id=user)) == 5
    assert len(rows(d, "contentsessionlog", user_id=user)) == 2
    assert {a["masterylog_id"] for a in rows(d, "attemptlog", user_id=user)} == {mastery["id"]}

    user = users["td_ex_client_done"]
    (summary,) = rows(d, "contentsummarylog", user_id=user)
    assert (summary["progress"], summary["time_spent"]) == (1.0, 33.0), summary
    assert summary["completion_timestamp"] == "2025-01-11T09:00:18.000000+00:00"
    assert summary["end_timestamp"] == "2025-01-11T10:00:15.000000+00:00"
    (mastery,) = rows(d, "masterylog", user_id=user)
    assert (mastery["complete"], mastery["time_spent"]) == (True, 33.0), mastery
    assert mastery["completion_timestamp"] == "2025-01-11T09:00:18.000000+00:00"
    assert mastery["end_timestamp"] == "2025-01-11T10:00:15.000000+00:00"

    (extra,) = rows(d, "contentsummarylog", user_id=users["td_extra"])
    assert extra["extra_fields"] == {"contentState": {"page": 4, "device": "D1"}}, extra
    assert (extra["time_spent"], extra["end_timestamp"]) == (12.0, "2025-01-11T10:00:05.000000+00:00")


# --- identity: a state dir copied to a second machine --------------------------------------------

@dataclass
class Ledger:
    """Every acknowledged write, so "nothing dropped" can be checked row by row: each
    update's ``time_spent_delta`` is a distinct power of two, so a session's time_spent
    names exactly the updates folded into it."""

    sessions: dict[str, tuple[str, float]] = field(default_factory=dict)   # session -> (user, expected time)
    _next: int = 0

    def start(self, d: DaemonProcess, user: str, at: str) -> str:
        session_id = start(d, user, at)
        self.sessions[session_id] = (user, 0.0)
        return session_id

    def update(self, d: DaemonProcess, session_id: str, at: str) -> None:
        user, total = self.sessions[session_id]
        seconds = float(2 ** self._next)
        self._next += 1
        update(d, user, session_id, at, seconds)
        self.sessions[session_id] = (user, total + seconds)

    def missing(self, d: DaemonProcess) -> list[str]:
        """What ``d`` lacks or holds wrongly, as readable lines."""
        held = by_id(rows(d, "contentsessionlog"))
        problems = []
        for session_id, (user, total) in sorted(self.sessions.items()):
            row = held.get(session_id)
            if row is None:
                problems.append(f"session {session_id} of {user[:8]} is missing")
            elif row["time_spent"] != total:
                have = int(row["time_spent"])
                want = int(total)
                problems.append(f"session {session_id} of {user[:8]}: time_spent {row['time_spent']} != {total} "
                                f"(updates missing: bits {bin(want & ~have)}, extra: bits {bin(have & ~want)})")
        extra = set(held) - set(self.sessions)
        if extra:
            problems.append(f"sessions nobody wrote: {sorted(extra)}")
        return problems


@dataclass
class Clones:
    original: DaemonProcess
    copy: DaemonProcess
    ledger: Ledger
    shared_user: str
    shared_session: str


def clone_state_dir(daemons: list[DaemonProcess], *, same_machine: bool) -> Clones:
    """A daemon with a facility and logs, stopped, its state dir copied (a cloned tablet
    image), both started: the copy with another machine id, or with the same one."""
    original = new_daemon(daemons, "tablet", machine="machine-a")
    create_facility(original)
    ledger = Ledger()
    shared_user = uuid.uuid4().hex
    shared_session = ledger.start(original, shared_user, "2025-01-06T09:00:00+00:00")
    ledger.update(original, shared_session, "2025-01-06T09:00:10+00:00")
    other = ledger.start(original, uuid.uuid4().hex, "2025-01-06T09:01:00+00:00")
    ledger.update(original, other, "2025-01-06T09:01:10+00:00")
    before = original.status()
    assert original.stop() == 0
    copy = new_daemon(daemons, "clone", machine="machine-a" if same_machine else "machine-b", start=False)
    shutil.copytree(original.state_dir, copy.state_dir)
    original.start()
    copy.start()
    if same_machine:
        assert copy.ready["device_id"] == before["device_id"]
    else:
        assert copy.ready["device_id"] != before["device_id"], "the copy kept the device id on another machine"
        assert copy.status()["epoch"] != before["epoch"]
        assert "taking a new device id" in copy.log_text()
    assert original.ready["device_id"] == before["device_id"]
    return Clones(original, copy, ledger, shared_user, shared_session)


def write_on_both(c: Clones) -> None:
    """Both devices write after the copy: to the shared learner's old session (the same
    record on both), new sessions for that learner, and a learner of their own."""
    for d, minute in ((c.original, 10), (c.copy, 20)):
        c.ledger.update(d, c.shared_session, f"2025-01-06T09:{minute:02d}:00+00:00")
        c.ledger.update(d, c.shared_session, f"2025-01-06T09:{minute:02d}:05+00:00")
        mine = c.ledger.start(d, c.shared_user, f"2025-01-06T09:{minute:02d}:10+00:00")
        c.ledger.update(d, mine, f"2025-01-06T09:{minute:02d}:20+00:00")
        own = c.ledger.start(d, uuid.uuid4().hex, f"2025-01-06T09:{minute:02d}:30+00:00")
        c.ledger.update(d, own, f"2025-01-06T09:{minute:02d}:40+00:00")


def test_state_dir_copied_to_another_machine_loses_no_write(daemons: list[DaemonProcess]) -> None:
    c = clone_state_dir(daemons, same_machine=False)
    write_on_both(c)
    reports = [sync(c.copy, c.original), sync(c.original, c.copy)]
    assert all(r["outcome"] == "ok" for r in reports), reports
    for d in (c.original, c.copy):
        assert not c.ledger.missing(d), (d.root, c.ledger.missing(d))
    assert c.original.status()["digests"] == c.copy.status()["digests"]


def test_cloned_image_with_the_same_machine_id_loses_no_write(daemons: list[DaemonProcess]) -> None:
    """The image includes /etc/machine-id, so the copy keeps the device id, key and epoch.
    Both write, both sync with each other: nothing may be missing on either."""
    c = clone_state_dir(daemons, same_machine=True)
    write_on_both(c)
    reports = [sync(c.copy, c.original), sync(c.original, c.copy)]
    problems = {label: c.ledger.missing(d) for label, d in (("original", c.original), ("copy", c.copy))}
    assert all(r["outcome"] == "ok" for r in reports) and not any(problems.values()), (
        "clones with the same machine id did not converge:\n"
        + "\n".join(f"  sync {r['role']} -> {r['address']}: {r['outcome']} {r['reason']}" for r in reports)
        + "\n" + "\n".join(f"  {name}: {lines}" for name, lines in problems.items()))
    # Each clone warns loudly, once per instance of the other, however many sessions.
    assert sync(c.copy, c.original)["outcome"] == "ok"
    for d, other in ((c.original, c.copy), (c.copy, c.original)):
        wait_until(lambda d=d: "CLONED STATE DIR" in d.log_text(), 10, f"the clone warning of {d.root}")
        assert d.log_text().count("CLONED STATE DIR") == 1, d.log_text()
        assert d.status()["clones_seen"] == [other.status()["instance_id"]]


def test_cloned_image_with_the_same_machine_id_through_a_school_server(daemons: list[DaemonProcess]) -> None:
    """The same clones and a school server S that syncs with each of them (as its scheduler
    would: S initiates). S keeps cursors per device id, and both clones have the same device
    id and epoch, while their change feeds differ."""
    c = clone_state_dir(daemons, same_machine=True)
    server = new_daemon(daemons, "server")
    join(c.original, server)
    # After the copy: the original writes one learner once; the copy writes a learner once,
    # then another one three times, so its change feed runs further than the original's.
    a_user, b_first, b_second = uuid.uuid4().hex, uuid.uuid4().hex, uuid.uuid4().hex
    c.ledger.start(c.original, a_user, "2025-01-06T10:00:00+00:00")
    c.ledger.start(c.copy, b_first, "2025-01-06T10:01:00+00:00")
    second = c.ledger.start(c.copy, b_second, "2025-01-06T10:02:00+00:00")
    c.ledger.update(c.copy, second, "2025-01-06T10:02:10+00:00")
    c.ledger.update(c.copy, second, "2025-01-06T10:02:20+00:00")
    reports = []
    for _ in range(2):
        reports += [sync(server, c.original), sync(server, c.copy)]
    problems = {label: c.ledger.missing(d) for label, d in (("server", server), ("original", c.original),
                                                             ("copy", c.copy))}
    assert all(r["outcome"] == "ok" for r in reports) and not any(problems.values()), (
        "two clones with the same machine id and a school server that syncs with both did not converge:\n"
        + "\n".join(f"  server -> {r['address']} ({(r['peer'] or '?')[:12]}): {r['outcome']} in={r['partitions_in']} "
                    f"out={r['partitions_out']} full={r['full']} {r['full_reason']} {r['reason']}" for r in reports)
        + "\n" + "\n".join(f"  missing on the {label}: {lines}" for label, lines in problems.items()))


# --- resume: kill -9 the serving daemon mid-transfer ---------------------------------------------

class GatedRelay:
    """A TCP relay to a daemon's peer port (TLS passes through untouched). Client-to-server
    bytes flow freely; server-to-client bytes flow only within a budget the test grants,
    so the test can hold a transfer at a chosen point."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = int(self.listener.getsockname()[1])
        self.cond = threading.Condition()
        self.budget = 0
        self.waiting = False          # server bytes are pending and the budget is spent
        self.forwarded = 0
        self.closed = False
        self.sockets: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def grant(self, n: int) -> None:
        with self.cond:
            self.budget += n
            self.cond.notify_all()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.target_port))
            self.sockets += [client, upstream]
            threading.Thread(target=self._pump, args=(client, upstream), daemon=True).start()
            threading.Thread(target=self._pump_gated, args=(upstream, client), daemon=True).start()

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass

    def _pump_gated(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                view = memoryview(data)
                while view:
                    with self.cond:
                        while self.budget <= 0 and not self.closed:
                            self.waiting = True
                            self.cond.wait()
                        self.waiting = False
                        if self.closed:
                            return
                        n = min(len(view), self.budget)
                        self.budget -= n
                    dst.sendall(view[:n])
                    self.forwarded += n
                    view = view[n:]
        except OSError:
            pass

    def close(self) -> None:
        with self.cond:
            self.closed = True
            self.cond.notify_all()
        self.listener.close()
        for sock in self.sockets:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            sock.close()


LEARNERS = 100
SESSIONS_PER_LEARNER = 15     # 100 x 15 x (start + update) = 3,000 writes


def load_school(d: DaemonProcess) -> dict[str, list[str]]:
    """~3,000 acknowledged writes: every learner's sessions, each with one update carrying
    ~4 KB of contentState, so the school is well over one 4 MiB delta frame."""
    rng = random.Random(4)
    blobs = ["".join(rng.choices(string.ascii_letters, k=4000)) for _ in range(64)]

    def learner(n: int) -> tuple[str, list[str]]:
        user = uuid.UUID(int=random.Random(n).getrandbits(128)).hex
        made = []
        for i in range(SESSIONS_PER_LEARNER):
            session_id = start(d, user, f"2025-01-06T09:{i:02d}:00+00:00")
            update(d, user, session_id, f"2025-01-06T09:{i:02d}:30+00:00", 5.0,
                   extra_fields={"contentState": {"blob": blobs[(n + i) % len(blobs)], "n": i}})
            made.append(session_id)
        return user, made

    with ThreadPoolExecutor(8) as pool:
        return dict(pool.map(learner, range(LEARNERS)))


def test_sync_interrupted_by_kill_9_of_the_server_resumes(daemons: list[DaemonProcess]) -> None:
    d1, d2 = new_daemon(daemons, "server"), new_daemon(daemons, "tablet")
    create_facility(d1)
    join(d1, d2)
    school = load_school(d1)
    every_session = {s for sessions in school.values() for s in sessions}
    assert len(every_session) == LEARNERS * SESSIONS_PER_LEARNER
    before_kill = d1.status()
    assert before_kill["feed_seq"] == 2 * LEARNERS * SESSIONS_PER_LEARNER
    assert before_kill["partitions"] == LEARNERS

    relay = GatedRelay(d1.ready["sync_port"])
    outcome: dict[str, Any] = {}
    puller = threading.Thread(target=lambda: outcome.update(sync(d2, relay.port)), daemon=True)
    puller.start()
    try:
        relay.grant(64 * 1024)

        def mid_transfer() -> int:
            """Grant the relay bytes in small steps until D2 has committed part of the school
            and the relay holds D1's next delta frame: the moment to pull the plug. (The
            steps are small beside a frame, a few hundred KB compressed: a large step could
            let the whole of the next frame through while D2 commits the first.)"""
            committed = int(d2.status()["partitions"])
            if relay.waiting and committed > 0:
                return committed
            if relay.waiting:
                relay.grant(8 * 1024)
            return 0

        committed = wait_until(mid_transfer, 60, "D2 to commit part of the school with D1's next frame held")
        assert d1.proc is not None
        d1.kill()                                # SIGKILL while its response is in flight
    finally:
        relay.close()
    puller.join(timeout=60)
    assert outcome.get("outcome") == "failed", outcome
    committed = int(d2.status()["partitions"])
    assert 0 < committed < LEARNERS, f"not mid-transfer: D2 committed {committed} of {LEARNERS} partitions"
    partial = d2.status()

    d1.start()                                   # same state dir: every acknowledged write is there
    after_restart = d1.status()
    assert after_restart["digests"] == before_kill["digests"], "D1 lost writes to kill -9"
    assert after_restart["feed_seq"] == before_kill["feed_seq"]

    resumed = sync(d2, d1)
    assert resumed["outcome"] == "ok", resumed
    assert resumed["partitions_in"] == LEARNERS - committed, (
        f"the resumed sync re-imported committed partitions: {resumed['partitions_in']} in, "
        f"{LEARNERS - committed} were missing")
    for partition, digest in partial["digests"].items():   # what D2 had committed is unchanged
        assert d2.status()["digests"][partition] == digest, partition

    sessions = by_id(rows(d2, "contentsessionlog"))         # by_id refuses duplicate ids
    assert set(sessions) == every_session, f"D2 lacks {len(every_session - set(sessions))} sessions"
    assert all(r["time_spent"] == 5.0 for r in sessions.values()), "an update was lost or doubled"
    summaries = rows(d2, "contentsummarylog")
    assert len(summaries) == LEARNERS
    assert all(s["time_spent"] == 5.0 * SESSIONS_PER_LEARNER for s in summaries), "a summary lost or doubled time"
    final = d2.status()
    assert final["digests"] == d1.status()["digests"]
    assert final["records"] == d1.status()["records"]
    again = sync(d2, d1)
    assert (again["outcome"], again["partitions_in"], again["records_in"]) == ("ok", 0, 0), again


def test_a_school_pulled_through_import_workers_converges(daemons: list[DaemonProcess]) -> None:
    """A tablet whose import workers join at once (``import_workers_above = 0``): real
    worker processes, started from the daemon's own environment, take part of the first
    sync, and the tablet ends with the server's rows, byte for byte."""
    d1 = new_daemon(daemons, "server")
    d2 = DaemonProcess(short_tempdir(), name="tablet", config="[store]\nimport_workers_above = 0\n")
    daemons.append(d2)
    d2.start()
    create_facility(d1)
    join(d1, d2)
    school = load_school(d1)
    report = sync(d2, d1)
    assert report["outcome"] == "ok", report
    assert report["partitions_in"] == LEARNERS
    status = d2.status()
    assert status["store"]["worker_imports"] > 0, status["store"]
    assert status["digests"] == d1.status()["digests"]
    sessions = by_id(rows(d2, "contentsessionlog"))
    assert set(sessions) == {s for found in school.values() for s in found}

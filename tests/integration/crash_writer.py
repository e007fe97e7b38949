"""Load for the crash test, run as its own process: clients write continuously and log
every acknowledged write to a file. Connection errors (the daemon was killed) are
retried once the socket answers again; only 200 responses count as acknowledged.

usage: crash_writer.py SOCKET ACK_FILE STOP_FILE CLIENTS
"""

from __future__ import annotations

import sys
import threading
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tests.daemon_harness import UnixHTTP  # noqa: E402

VIDEO = {
    "node_id": "32a941fb77c2576e8f6b294cde4c3b0c",
    "content_id": "c6f49ea527824f398f4d5d26faf19396",
    "channel_id": "6199dde695db4ee4ab392222d5af1e5c",
    "kind": "video",
}


def client(http: UnixHTTP, acks: "AckLog", stop: Path) -> None:
    user = uuid.uuid4().hex
    session: str | None = None
    while not stop.exists():
        try:
            if session is None:
                status, body = http.json("POST", "/api/logger/trackprogress/", VIDEO, user=user)
                if status == 200:
                    session = body["session_id"]
                    acks.write(f"S {user} {session}")
                continue
            status, body = http.json(
                "PUT", f"/api/logger/trackprogress/{session}/", {"time_spent_delta": 1.0}, user=user
            )
            if status == 200:
                acks.write(f"U {user} {session}")
        except OSError:
            time.sleep(0.01)  # wait-ok: the daemon is down; retry until the test stops us


class AckLog:
    def __init__(self, path: Path) -> None:
        self._file = open(path, "a", buffering=1)
        self._lock = threading.Lock()

    def write(self, line: str) -> None:
        with self._lock:
            self._file.write(line + "\n")


def main() -> None:
    socket_path, ack_path, stop_path, clients = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3]), int(sys.argv[4])
    http = UnixHTTP(socket_path, timeout=10)
    acks = AckLog(ack_path)
    threads = [threading.Thread(target=client, args=(http, acks, stop_path)) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


if __name__ == "__main__":
    main()

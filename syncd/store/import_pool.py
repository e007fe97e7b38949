"""Import worker processes (``store.import_worker``): first imports beside the event loop.

A full sync of a large school is mostly first imports (``store.first_import``), and the
event loop can take only one at a time on one core. The store hands some of them to
worker processes while it takes others itself, so both cores work. Workers start on
first use and end after ``idle`` seconds without work: a daemon that is not receiving a
school pays nothing for them.

A worker that cannot start, dies, or answers what it should not is logged and dropped;
the store then takes its chunks itself (``WorkerError``). A worker's refusal is the
peer's fault and comes back as the InvalidRecordError the in-process path would raise.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import sys
from pathlib import Path
from typing import Any

import msgpack

from syncd.errors import InvalidRecordError
from syncd.store.first_import import FirstImport, from_wire
from syncd.store.import_worker import MAX_REQUEST

log = logging.getLogger(__name__)

WORKER_COMMAND: tuple[str, ...] = (sys.executable, "-m", "syncd.store.import_worker")
_STDERR_TAIL = 2000
# The most a worker may answer for one chunk: its rows and snapshot are a few times the
# chunk, which is at most MAX_REQUEST.
MAX_ANSWER = 8 * MAX_REQUEST


class WorkerError(Exception):
    """A worker failed (not the chunk's fault): take the chunk in-process."""


class _Worker:
    """One child process and the requests it has not answered yet, in order."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.waiting: dict[int, asyncio.Future[Any]] = {}
        assert proc.stdout is not None and proc.stderr is not None
        self.errors = asyncio.ensure_future(proc.stderr.read())
        self.reader = asyncio.ensure_future(self._read(proc.stdout))

    async def _read(self, stdout: asyncio.StreamReader) -> None:
        unpacker = msgpack.Unpacker(max_buffer_size=MAX_ANSWER)
        problem = "ended"
        try:
            while chunk := await stdout.read(1 << 20):
                unpacker.feed(chunk)
                for item in unpacker:
                    future = self.waiting.pop(item[0], None) if isinstance(item, list) and item else None
                    if future is None:
                        raise ValueError(f"an answer to no request: {str(item)[:80]}")
                    if not future.done():  # (a request given up on is answered all the same)
                        future.set_result(item)
        except (ValueError, TypeError, msgpack.UnpackException) as exc:
            problem = f"sent what it should not ({exc})"
        finally:
            self.fail(problem)

    def fail(self, problem: str) -> None:
        for future in self.waiting.values():
            if not future.done():
                future.set_exception(WorkerError(problem))
                # (seen: a request given up on has no one left to tell, and asyncio would
                # print the failure when the future is collected; an awaiter still gets it)
                future.exception()
        self.waiting.clear()

    @property
    def alive(self) -> bool:
        return self.proc.returncode is None and not self.reader.done()

    async def stop(self) -> str:
        """End the process (its stdin closed: it finishes what it was given); its stderr."""
        if self.proc.stdin is not None and not self.proc.stdin.is_closing():
            self.proc.stdin.close()
        try:
            await asyncio.wait_for(self.proc.wait(), 10)
        except TimeoutError:
            self.proc.kill()
            await self.proc.wait()
        await self.reader
        return (await self.errors).decode(errors="replace").strip()


class ImportPool:
    """Up to ``workers`` import workers, each given at most ``depth`` chunks at a time."""

    def __init__(self, workers: int, *, idle: float = 10.0, depth: int = 3, timeout: float = 120.0) -> None:
        self.workers = workers
        self._idle, self._depth = idle, depth
        self._timeout = timeout  # for one answer (a worker takes a large learner in a second)
        self._running: list[_Worker] = []
        self._ids = itertools.count()
        self._idle_timer: asyncio.TimerHandle | None = None
        self._failures = 0
        self._closed = False
        self._starting = asyncio.Lock()
        self.imports = 0  # first imports the workers took (status)

    def capacity(self) -> int:
        """How many more chunks the workers can be given now (each at most ``depth``
        queued); 0 once they failed three times (the daemon takes everything itself)."""
        if self.workers == 0 or self._closed or self._failures >= 3:
            return 0
        queued = sum(len(w.waiting) for w in self._running if w.alive)
        return max(0, self.workers * self._depth - queued)

    async def run(self, partition: str, data: bytes, dataset_id: str) -> FirstImport:
        """``first_import.fold_first_import`` in a worker: InvalidRecordError if the chunk
        is refused, WorkerError if the worker failed."""
        worker = await self._worker()
        request_id = next(self._ids)
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        worker.waiting[request_id] = future
        assert worker.proc.stdin is not None
        problem = ""
        try:
            async with asyncio.timeout(self._timeout):
                worker.proc.stdin.write(msgpack.packb([request_id, partition, data, dataset_id]))
                await worker.proc.stdin.drain()
                answer = await future
        except (ConnectionError, BrokenPipeError) as exc:
            problem = f"went away ({type(exc).__name__})"
        except WorkerError as exc:
            problem = str(exc)
        except TimeoutError:
            problem = f"did not answer within {self._timeout:.0f} s"
        finally:
            # (cancelled, the request stays listed: its answer still comes, and is dropped)
            if future.done() and not future.cancelled():
                worker.waiting.pop(request_id, None)
            self._arm_idle_timer()
        if problem:
            await self._drop(worker, problem)
            raise WorkerError(problem)
        try:
            if answer[1] == "ok":
                result = from_wire(answer[2])
                if result.partition != partition:
                    raise ValueError(f"a result for {result.partition!r}, asked for {partition!r}")
                self.imports += 1
                return result
            if answer[1] == "refused":
                error = InvalidRecordError("", str(answer[3]), code=str(answer[4]))
                error.field = str(answer[2])
                raise error
            raise WorkerError(f"failed on a chunk: {answer[2]}")
        except (ValueError, TypeError, IndexError) as exc:
            await self._drop(worker, f"sent what it should not ({exc})")
            raise WorkerError(str(exc)) from None

    async def _worker(self) -> _Worker:
        if self._idle_timer is not None:
            self._idle_timer.cancel()
            self._idle_timer = None
        async with self._starting:  # (one start at a time: the list is read after it)
            self._running = [w for w in self._running if w.alive]
            if len(self._running) < self.workers and all(w.waiting for w in self._running):
                worker = await self._start()
                self._running.append(worker)
            return min(self._running, key=lambda w: len(w.waiting))

    async def _start(self) -> _Worker:
        # The child must import this package whether or not it is installed.
        root = str(Path(__file__).resolve().parents[2])
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")])))
        try:
            proc = await asyncio.create_subprocess_exec(
                *WORKER_COMMAND, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE, env=env,
            )
        except OSError as exc:
            self._failures += 1
            log.warning("could not start an import worker (%s); the daemon takes the chunks itself", exc)
            raise WorkerError(str(exc)) from None
        log.debug("started import worker %d", proc.pid)
        return _Worker(proc)

    async def _drop(self, worker: _Worker, problem: str) -> None:
        self._failures += 1
        if worker in self._running:
            self._running.remove(worker)
        if worker.proc.returncode is None:
            worker.proc.kill()
        worker.fail(problem)  # (its other waiting requests are taken in-process too)
        stderr = await worker.stop()
        log.warning("an import worker %s; the daemon takes its chunks itself%s", problem,
                    f": {stderr[-_STDERR_TAIL:]}" if stderr else "")

    def _arm_idle_timer(self) -> None:
        if self._closed or any(w.waiting for w in self._running) or not self._running:
            return
        if self._idle_timer is not None:
            self._idle_timer.cancel()
        self._idle_timer = asyncio.get_running_loop().call_later(
            self._idle, lambda: asyncio.ensure_future(self._stop_idle()))

    async def _stop_idle(self) -> None:
        self._idle_timer = None
        idle = [w for w in self._running if not w.waiting]
        self._running = [w for w in self._running if w.waiting]
        for worker in idle:
            await worker.stop()

    async def close(self) -> None:
        self._closed = True
        if self._idle_timer is not None:
            self._idle_timer.cancel()
        running, self._running = self._running, []
        for worker in running:
            await worker.stop()

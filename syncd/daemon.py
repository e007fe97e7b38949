"""The daemon: wiring and lifecycle only.

Start-up order (read as a list, as Syncthing's ``App.startup``):
1. lock the state dir and open the store (migrations, identity, a fresh peer id);
2. start peer sync: load the facility, open the HTTPS peer port (so its bound port is
   known), start the scheduler;
3. serve the API on a temporary socket name, then rename it into place, so the socket
   file existing means the API answers (a stale file from ``kill -9`` is replaced);
4. print the ready line (``--print-ready``) and tell systemd READY=1;
5. start mDNS discovery (a second of name probing: after ready).
Shutdown runs in reverse on SIGTERM/SIGINT.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import json
import logging
import os
import resource
import signal
import socket
import stat
import sys
from pathlib import Path
from typing import Any

from aiohttp import web

from syncd import __version__, systemd
from syncd.api import make_app
from syncd.api.facility import add_routes
from syncd.api.keys import SYNC
from syncd.config import Settings
from syncd.errors import SyncdError
from syncd.store.sqlite import SqliteStore
from syncd.sync.service import SyncService

log = logging.getLogger("syncd")


def run(settings: Settings, *, print_ready: bool = False) -> int:
    """Run until SIGTERM/SIGINT; the process exit status."""
    logging.basicConfig(
        level=os.environ.get("SYNCD_LOG_LEVEL", "INFO").upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    # The writer thread needs the GIL for a moment between SQLite calls; with the default
    # 5 ms switch interval it waits behind request handling and every commit (and so every
    # acknowledgement) is late by up to that much.
    sys.setswitchinterval(0.0005)
    _raise_descriptor_limit()
    limit_malloc_arenas()
    try:
        return asyncio.run(_serve(settings, print_ready))
    except SyncdError as exc:
        print(f"syncd: {exc.detail}", file=sys.stderr)
        return 1


MALLOC_ARENAS = 2
_M_ARENA_MAX = -8  # glibc's mallopt parameter


def limit_malloc_arenas(arenas: int = MALLOC_ARENAS) -> bool:
    """Cap glibc's malloc arenas (before the store starts its threads); whether it took.

    glibc gives a thread that allocates while another holds the main arena an arena of
    its own, up to eight a core, and a large block freed in one stays there. The store's
    reader, writer, fold and checkpoint threads pass sync blobs and rows between them:
    after a full sync and six incremental ones of school S, the daemon's peak RSS was
    118-121 MB with the default, 108-109 MB with two arenas, at the same speed.
    ``MALLOC_ARENA_MAX`` in the environment wins; other C libraries are left alone."""
    if "MALLOC_ARENA_MAX" in os.environ:
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return bool(mallopt(_M_ARENA_MAX, arenas))


def _raise_descriptor_limit() -> None:
    """Soft RLIMIT_NOFILE up to the hard limit: every peer connection holds a descriptor,
    and running out would stop the app socket's accept() too."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or hard > soft:
        target = 65536 if hard == resource.RLIM_INFINITY else hard
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))


def _socket_in_use(path: Path) -> bool:
    """True if a live process accepts connections on ``path``."""
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(str(path))
    except OSError:
        return False
    finally:
        probe.close()
    return True


def _bind_unix(path: Path) -> tuple[socket.socket, Path]:
    """A listening socket bound to a temporary name next to ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists():
        if not stat.S_ISSOCK(path.stat().st_mode):
            raise SyncdError(f"{path} exists and is not a socket; refusing to replace it")
        if _socket_in_use(path):
            raise SyncdError(f"another daemon is serving {path}")
    # A short temporary name: the final path may use nearly all of sun_path's 107 bytes.
    temporary = path.with_name(f".{os.getpid() % 10**7}")
    if len(os.fsencode(temporary)) > 107:
        raise SyncdError(f"the socket directory {path.parent} is too deep for a Unix socket path")
    with contextlib.suppress(FileNotFoundError):
        temporary.unlink()
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(str(temporary))
    os.chmod(temporary, 0o660)
    sock.listen(128)
    return sock, temporary


async def _serve(settings: Settings, print_ready: bool) -> int:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)

    store = await SqliteStore.open(
        settings.device.state_dir,
        cache_documents=settings.store.cache_documents,
        cache_decoded=settings.store.cache_decoded,
        compact_after=settings.store.compact_after,
        group_commit=settings.store.group_commit,
        rebuild_workers=settings.store.rebuild_workers,
        import_workers=settings.store.import_workers,
        import_workers_above=settings.store.import_workers_above,
    )
    socket_path = settings.api.socket
    runner: web.AppRunner | None = None
    sync: SyncService | None = None
    temporary: Path | None = None
    owns_socket = False
    try:
        sync = SyncService(store, settings)
        await sync.start()

        def status_extra() -> dict[str, Any]:
            assert sync is not None
            return {
                "name": settings.device.name,
                "version": __version__,
                "socket": str(socket_path),
                "pid": os.getpid(),
                **sync.status_view(),
            }

        app = make_app(store, settings, status_extra)
        add_routes(app, sync.facility)
        app[SYNC] = sync
        runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await runner.setup()
        sock, temporary = _bind_unix(socket_path)
        await web.SockSite(runner, sock).start()
        os.replace(temporary, socket_path)  # atomic: the socket appears ready
        owns_socket = True
        log.info("syncd %s device %s serving %s", __version__, store.device_id, socket_path)
        if print_ready:
            line = {"socket": str(socket_path), "sync_port": sync.sync_port, "device_id": store.device_id}
            print(json.dumps(line), flush=True)
        systemd.ready()
        await sync.start_discovery()
        await stop.wait()
        log.info("stopping")
        systemd.stopping()
    finally:
        with contextlib.suppress(FileNotFoundError):
            if owns_socket:
                socket_path.unlink()
            elif temporary is not None:
                temporary.unlink()
        if runner is not None:
            await runner.cleanup()
        if sync is not None:
            await sync.stop()
        await store.close()
    return 0

"""Speech Studio entry point: `python app.py [--host 0.0.0.0] [--port 7860] [--share] [--wyoming URI]
[--ray ADDRESS]`.

`--wyoming tcp://0.0.0.0:10200` (or STUDIO_WYOMING_URI) also serves the voices to Home Assistant over
the Wyoming protocol, in the same process. `--ray HOST:6379` (or STUDIO_RAY_ADDRESS) makes the
embedded engines' speech on the nodes of that Ray cluster (engines/cluster.py). Also the Hugging Face Spaces entry (Spaces run
`python app.py`). Logs are JSON lines on stderr (`STUDIO_LOG_FORMAT=text` for plain text). SIGTERM
or Ctrl+C shut down gracefully: open requests get a few seconds, running resumable tasks are paused
and resume on the next start, and the process exits 0.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import socket
import sys
from typing import Any

# Offline by design: no hub lookups, no telemetry (gradio_client otherwise pings the hub).
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

SHUTDOWN_GRACE_S = 5  # open requests get this long after SIGTERM before they are cut
MALLOC_ARENAS = 2  # glibc otherwise keeps up to 8 arenas per core for the request threads: memory creeps up


def limit_malloc_arenas() -> None:
    """Cap glibc's malloc arenas (like MALLOC_ARENA_MAX) before the server starts its threads."""
    import ctypes
    import ctypes.util

    if os.environ.get("MALLOC_ARENA_MAX") or not sys.platform.startswith("linux"):
        return  # the user chose, or not glibc
    with contextlib.suppress(OSError, AttributeError):  # musl and others have no mallopt: nothing to tune
        ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").mallopt(-8, MALLOC_ARENAS)  # M_ARENA_MAX


class ReturnMemoryWhenIdle:
    """ASGI wrapper: once no HTTP request has run for `quiet_s`, the memory requests freed goes back
    to the OS (`return_freed_memory`). One timer after the last request ends; nothing while idle."""

    def __init__(self, app: Any, quiet_s: float = 2.0) -> None:
        self.app = app
        self.quiet_s = quiet_s
        self.busy = 0
        self.timer: asyncio.TimerHandle | None = None

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        self.busy += 1
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        try:
            await self.app(scope, receive, send)
        finally:
            self.busy -= 1
            if not self.busy:
                self.timer = asyncio.get_running_loop().call_later(self.quiet_s, self._quiet)

    def _quiet(self) -> None:
        from engines.memory import return_freed_memory

        self.timer = None
        if not self.busy:  # off the event loop: trimming a large heap takes a few ms
            asyncio.get_running_loop().run_in_executor(None, return_freed_memory)


def lan_address() -> str:
    """This machine's address on its LAN (no packet leaves: UDP connect only picks a route)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("10.255.255.255", 1))
            return probe.getsockname()[0]
        except OSError:
            return "127.0.0.1"


def share_link(port: int) -> str:
    """Open a Gradio share tunnel to this server; needs internet access to Gradio's share server."""
    import secrets

    from gradio.networking import setup_tunnel

    try:
        return f"Public share link: {setup_tunnel('127.0.0.1', port, secrets.token_urlsafe(32), None, None)}"
    except Exception as error:  # no internet, no frpc binary, server refused: the studio still runs locally
        return f"--share failed ({error}); the studio still serves locally"


def main() -> None:
    parser = argparse.ArgumentParser(description="Speech Studio: UI at / and REST API (docs at /docs)")
    parser.add_argument(
        "--host", default=None, help="bind address (default 127.0.0.1; 0.0.0.0 for a LAN demo)"
    )
    parser.add_argument("--port", type=int, default=None, help="port (default 7860)")
    parser.add_argument("--share", action="store_true", help="also open a public Gradio share link")
    parser.add_argument(
        "--wyoming",
        default=None,
        metavar="URI",
        help="also serve Home Assistant over the Wyoming protocol, e.g. tcp://0.0.0.0:10200",
    )
    parser.add_argument(
        "--ray",
        default=None,
        metavar="ADDRESS",
        help="make the embedded engines' speech on the nodes of this Ray cluster, e.g. 10.0.0.5:6379",
    )
    args = parser.parse_args()
    limit_malloc_arenas()

    import uvicorn

    from studio.config import Settings
    from studio.observability import configure_logging
    from studio.server import create_app

    configure_logging(json=os.environ.get("STUDIO_LOG_FORMAT", "json").lower() != "text")
    given = {"host": args.host, "port": args.port, "wyoming_uri": args.wyoming, "ray_address": args.ray}
    overrides = {k: v for k, v in given.items() if v is not None}
    settings = Settings(**overrides)
    from studio.space import running_on_space, space_settings

    if running_on_space():  # Hugging Face Space: shared-use preset (explicit settings still win)
        settings = space_settings(settings)
    app = create_app(settings)
    shown = lan_address() if settings.host == "0.0.0.0" else settings.host
    print(
        f"Speech Studio on http://{shown}:{settings.port}/  (API docs: http://{shown}:{settings.port}/docs)",
        flush=True,
    )
    if settings.wyoming_uri:
        from studio.wyoming_server import serve_beside

        serve_beside(app, settings.wyoming_uri)  # listens once the studio has started
        print(f"Wyoming (Home Assistant) on {settings.wyoming_uri}", flush=True)
    if args.share:
        print(
            "--share: a public link needs the Gradio share server; it is not reachable offline.", flush=True
        )
    # uvicorn re-raises the SIGTERM it handled once the shutdown is done; by then everything is saved,
    # so that second delivery just ends the process with status 0.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    uvicorn.run(
        ReturnMemoryWhenIdle(app),
        host=settings.host,
        port=settings.port,
        log_level="warning",
        log_config=None,  # uvicorn's own lines go through our (JSON) handler
        access_log=False,  # studio.observability logs each request, with its id and owner
        timeout_graceful_shutdown=SHUTDOWN_GRACE_S,  # streams and the UI's open polls don't hold the exit
    )


if __name__ == "__main__":
    main()

"""A live studio for the benchmarks: `python app.py --port <free port>` on loopback, in a subprocess
whose output goes to a log file, ready once it answers /health; stopped or killed by its PID only.

    with Server(data_dir, log_path) as server:  # launched; stopped on the way out
        server.wait_ready()
        httpx.get(server.url + "/api/v1/engines")
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from types import TracebackType

import httpx
import psutil

ROOT = Path(__file__).resolve().parent.parent
# Every benchmark's server: no rate limit, no downloads, no analytics.
SERVER_ENV = {"STUDIO_RATE_LIMIT_PER_MINUTE": "0", "HF_HUB_OFFLINE": "1", "GRADIO_ANALYTICS_ENABLED": "False"}


def free_port() -> int:
    """A loopback port nothing listens on now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Server:
    """`python app.py --port <port>` on `data_dir`, with SERVER_ENV and `env` over this process's
    environment; the same port (a free one unless given) on every launch."""

    def __init__(
        self, data_dir: Path, log_path: Path, env: dict[str, str] | None = None, port: int | None = None
    ) -> None:
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        self.env = {**os.environ, **SERVER_ENV, "STUDIO_DATA_DIR": str(data_dir), **(env or {})}
        self.process: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> Server:
        self.launch()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def launch(self) -> None:
        with self.log_path.open("ab") as out:
            self.process = subprocess.Popen(
                [sys.executable, "app.py", "--port", str(self.port)],
                cwd=ROOT,
                env=self.env,
                stdout=out,
                stderr=out,
            )

    def wait_ready(self, timeout: float = 180.0) -> None:
        """Return once /health answers 200; raise with the log's tail if it exits or stays silent."""
        assert self.process is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited early:\n{self.log_tail()}")
            try:
                if httpx.get(self.url + "/health", timeout=2, trust_env=False).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.3)
        raise RuntimeError(f"server did not answer /health within {timeout:.0f} s:\n{self.log_tail()}")

    def cpu_seconds(self) -> float:
        """User + system CPU seconds the server process has used so far (all its threads)."""
        times = psutil.Process(self.pid).cpu_times()
        return times.user + times.system

    def crash(self) -> None:
        """SIGKILL to this PID only: no shutdown hook runs, as in a power cut or an OOM kill."""
        assert self.process is not None
        self.process.kill()
        self.process.wait()

    def log_tail(self) -> str:
        return self.log_path.read_text(errors="replace")[-2000:] if self.log_path.exists() else ""

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()  # SIGTERM to this PID only
        try:
            self.process.wait(20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

"""Shared fixtures: an in-process studio (TestClient), a live server process, the bundled ASR, and a
headless Chromium (Debian's, driven by Playwright) for the browser tests."""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import time
from collections.abc import Coroutine, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import httpx
import pytest
from fastapi.testclient import TestClient

from bench.server import Server

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

ROOT = Path(__file__).resolve().parent.parent
T = TypeVar("T")

# Never `playwright install` (it downloads browsers): the browser tests use the system chromium.
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]
UI_TIMEOUT_MS = 30_000  # default wait for any element or assertion in a browser test


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Under `-n 2` (pytest-xdist, `--dist loadfile`): modules with a `slow` test first, each module's
    tests kept together and in order, so the long ones start early and the short ones even out the end.
    (xdist's own order, by test count, left one process the three longest modules for its last 20
    minutes.) A run in one process keeps the file order."""
    if not hasattr(config, "workerinput"):  # set on xdist's test processes only
        return
    slow = {item.path for item in items if item.get_closest_marker("slow")}
    first: dict[Path, int] = {}
    for index, item in enumerate(items):
        first.setdefault(item.path, index)
    items.sort(key=lambda item: (item.path not in slow, first[item.path]))


@pytest.fixture(scope="session")
def shared_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One engine cache for the whole run (the assembled Kokoro model is 92 MB, Whisper's 145 MB)."""
    return tmp_path_factory.mktemp("cache")


def make_settings(data_dir: Path, **overrides: object):  # type: ignore[no-untyped-def]
    from studio.config import Settings

    values = {
        "data_dir": data_dir,
        "weights_dir": data_dir / "weights",
        "rate_limit_per_minute": 0,
    } | overrides
    return Settings(**values)


@pytest.fixture(scope="session")
def studio_client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    """The whole app in-process, shared by API tests (engines load once)."""
    from studio.server import create_app

    app = create_app(make_settings(tmp_path_factory.mktemp("studio")))
    with TestClient(app) as client:
        yield client


@pytest.fixture(scope="session")
def transcriber(shared_cache: Path):  # type: ignore[no-untyped-def]
    from studio.services.asr import Transcriber

    return Transcriber(cache_dir=shared_cache / "whisper")


class LiveServer(Server):
    """`python app.py` in a subprocess on a free loopback port, as a user runs it; its log is
    `data_dir`/server.log."""

    def __init__(self, data_dir: Path, env: dict[str, str] | None = None) -> None:
        super().__init__(data_dir, data_dir / "server.log", env)
        self.data_dir = data_dir

    def start(self, timeout: float = 90.0) -> LiveServer:
        self.launch()
        self.wait_ready(timeout)
        return self


def run_coroutine(coroutine: Coroutine[Any, Any, T]) -> T:
    """`asyncio.run` on a thread of its own: the browser tests' session-wide Playwright keeps an
    event loop running on the main thread, where `asyncio.run` refuses to start another."""
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coroutine).result()


def wait_for_task(client: TestClient | httpx.Client, task_id: str, timeout: float = 120) -> dict:
    """Poll the task until it is completed, failed or cancelled; return it."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        task = client.get(f"/api/v1/task/{task_id}").json()
        if task["status"] in ("completed", "failed", "cancelled"):
            return task
        time.sleep(0.1)
    raise AssertionError(f"task {task_id} did not finish: {task}")


@pytest.fixture(scope="session")
def live_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    server = LiveServer(tmp_path_factory.mktemp("live")).start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def browser() -> Iterator[Browser]:
    """One headless Chromium for the whole run; tests that need it are skipped where it is missing."""
    if not CHROMIUM.exists():
        pytest.skip(
            f"{CHROMIUM} is missing: run scripts/ensure_chromium.sh (or apt-get install chromium) "
            "for the browser tests"
        )
    sync_api = pytest.importorskip(
        "playwright.sync_api", reason="the playwright pip package is not installed"
    )
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def page(browser: Browser, live_server: LiveServer) -> Iterator[Page]:
    """A fresh browser context on the studio's front page, the Speech tab showing."""
    from playwright.sync_api import expect

    context = browser.new_context(viewport={"width": 1280, "height": 900})
    context.set_default_timeout(UI_TIMEOUT_MS)
    page = context.new_page()
    page.goto(live_server.url + "/", wait_until="domcontentloaded")
    # The Speech tab is the first one: its text box is what a user sees first.
    expect(page.locator("#speech-text textarea")).to_be_visible()
    yield page
    context.close()

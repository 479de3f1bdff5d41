"""The Engines tab's Install button, as a user presses it: MOSS-TTSD's own environment is made for real
(pip from the package registries, torch 2.9.1 + torchaudio + transformers 5.0.0, ~7 GB) where it is
missing, with the progress and pip's log on screen, and the engine's state changes from needing its
environment to needing only its weights."""

from __future__ import annotations

import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from engines.environment import EngineEnvironment, EnvironmentState, environments_root
from tests.conftest import UI_TIMEOUT_MS, LiveServer

sync_api = pytest.importorskip("playwright.sync_api", reason="the playwright pip package is not installed")
pytestmark = pytest.mark.browser
INSTALL_TIMEOUT_MS = 900_000  # a cold pip cache downloads ~3 GB


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LiveServer, Path]]:
    """A studio whose moss-ttsd environment is missing: the real one where it is (a fresh checkout,
    as in CI: the MOSS-TTSD tests then reuse what this installs), else an empty folder of its own."""
    own = environments_root()
    missing = EngineEnvironment("moss-ttsd", own).state() is EnvironmentState.MISSING
    envs = own if missing else tmp_path_factory.mktemp("empty-envs")
    server = LiveServer(tmp_path_factory.mktemp("engines-ui"), env={"STUDIO_ENGINE_ENVS": str(envs)}).start()
    yield server, envs
    server.stop()
    if envs != own:
        shutil.rmtree(envs, ignore_errors=True)  # several GB


@pytest.mark.slow
def test_install_moss_ttsd_from_the_engines_tab(browser, server: tuple[LiveServer, Path]) -> None:  # type: ignore[no-untyped-def]
    live, envs = server
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    context.set_default_timeout(UI_TIMEOUT_MS)
    page = context.new_page()
    try:
        page.goto(live.url + "/", wait_until="domcontentloaded")
        page.get_by_role("tab", name="Engines").click()
        environments = page.locator("#environments")
        sync_api.expect(environments).to_contain_text("moss-ttsd")
        sync_api.expect(environments).to_contain_text("is missing")
        moss = page.locator("#engines-table").get_by_role("row").filter(has_text="MOSS-TTSD")
        sync_api.expect(moss).to_contain_text("needs-environment")

        box = page.locator("#install-engine input")
        box.click()
        box.fill("moss-ttsd")
        page.keyboard.press("Enter")
        page.keyboard.press("Tab")
        page.locator("#install-button").click()

        status = page.locator("#install-status")
        # Progress while pip works: a percent and the step, then pip's own lines in the log.
        sync_api.expect(status).to_contain_text(re.compile(r"\d+% · \d/\d "), timeout=120_000)
        sync_api.expect(page.locator("#install-log textarea")).to_have_value(
            re.compile(r"pip install .*torch==2\.9\.1"), timeout=120_000
        )
        sync_api.expect(status).to_contain_text("installed", timeout=INSTALL_TIMEOUT_MS)
        sync_api.expect(status).to_contain_text("is ready")
        sync_api.expect(status).to_contain_text("MOSS-TTSD-v1.0/config.json")  # what it still needs: weights
        sync_api.expect(environments).to_contain_text("is ready")
        sync_api.expect(moss).to_contain_text("needs-weights")
        assert (envs / "moss-ttsd" / "bin" / "python").exists()
    finally:
        context.close()

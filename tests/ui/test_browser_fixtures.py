"""
The browser fixtures themselves: Chromium renders, skips say why, and asyncio still works after.

The order matters: the first test starts the session's browser, the next ones prove that plain
``asyncio.run()`` and a pytest-asyncio test still run afterwards (Playwright's sync API leaves
its loop marked as running in the thread; ``conftest.py`` hides it between browser tests).
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from tests.ui.conftest import CHROMIUM_ARGS, launch_chromium, missing_chromium

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page

CONFTEST = Path(__file__).with_name("conftest.py")


def test_page_renders_and_types(page: Page, tmp_path: Path) -> None:
    page.set_content("<label>API Key <input type='password' id='key' placeholder='k'></label>")
    page.get_by_label("API Key").fill("typed")
    assert page.input_value("#key") == "typed"
    shot = tmp_path / "fixture.png"
    page.screenshot(path=str(shot))
    assert shot.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")


def test_browser_is_headless_chromium_with_the_spec_flags(browser: Browser) -> None:
    assert browser.browser_type.name == "chromium"
    assert browser.is_connected()
    page = browser.new_page()
    try:
        user_agent = page.evaluate("navigator.userAgent")
    finally:
        page.close()
    assert "HeadlessChrome" in user_agent
    assert set(CHROMIUM_ARGS) >= {"--headless", "--no-sandbox", "--disable-gpu"}


def test_asyncio_run_works_after_a_browser_test() -> None:
    async def answer() -> int:
        await asyncio.sleep(0.01)
        return 42

    with pytest.raises(RuntimeError, match="no running event loop"):
        asyncio.get_running_loop()
    assert asyncio.run(answer()) == 42


async def test_async_tests_run_after_a_browser_test() -> None:
    await asyncio.sleep(0.01)
    assert asyncio.get_running_loop().is_running()


def test_page_works_again_after_asyncio(page: Page) -> None:
    page.set_content("<p id='p'>second</p>")
    assert page.inner_text("#p") == "second"


def test_missing_binary_gives_a_reason(tmp_path: Path) -> None:
    reason = missing_chromium(str(tmp_path / "no-chromium"))
    assert reason is not None
    assert "not found" in reason
    assert "make browser" in reason
    not_executable = tmp_path / "chromium"
    not_executable.write_text("#!/bin/sh\n")
    assert "not executable" in (missing_chromium(str(not_executable)) or "")


def test_a_binary_that_does_not_start_skips_with_the_reason(browser: Browser, tmp_path: Path) -> None:
    fake = tmp_path / "chromium"
    fake.write_text("#!/bin/sh\necho 'cannot open display' >&2\nexit 1\n")
    fake.chmod(0o755)
    with pytest.raises(pytest.skip.Exception, match=r"did not start"):
        launch_chromium(browser.browser_type, str(fake))


def test_page_saves_a_screenshot_when_its_test_fails(browser: Browser, tmp_path: Path) -> None:
    """A failing test in a pytest process of its own (its own Playwright and Chromium: about 5 s)."""
    project = tmp_path / "project"
    project.mkdir()
    shutil.copy(CONFTEST, project / "conftest.py")
    (project / "test_failing.py").write_text(
        textwrap.dedent(
            """
            def test_fails(page, tmp_path):
                page.set_content("<h1>visible at failure</h1>")
                (tmp_path.parent.parent / "failed-test-tmp").write_text(str(tmp_path))
                assert False, "on purpose"
            """
        )
    )
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", f"--basetemp={tmp_path / 'bt'}", "-q"],
        cwd=project,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 1, result.stdout + result.stderr
    assert "1 failed" in result.stdout, result.stdout
    assert "screenshot of about:blank at failure:" in result.stdout, result.stdout
    shot = Path((tmp_path / "failed-test-tmp").read_text()) / "failure.png"
    assert shot.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")

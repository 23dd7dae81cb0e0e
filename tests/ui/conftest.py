"""
Headless Chromium for the browser tests: Debian's ``chromium`` driven by Playwright's sync API.

Contract (other test modules rely on it):

- ``browser`` (session): a Playwright sync :class:`~playwright.sync_api.Browser` running
  ``/usr/bin/chromium`` (or ``$GETIMAGE_CHROMIUM``) headless with the flags of SPEC 8. Playwright
  gives each launch a fresh temporary profile (``--user-data-dir``) and deletes it at close. When
  Playwright is not installed, the binary is missing or it does not start, the test is skipped with
  the reason. ``make browser`` (part of ``make test``) installs the binary where it can; no browser
  is ever downloaded (never ``playwright install``).
- ``page`` (function): a page in a new browser context, closed after the test; when the test
  fails, a full-page screenshot is saved as ``failure.png`` in the test's ``tmp_path``.

Playwright's sync API runs its asyncio loop inside a greenlet of the calling thread and leaves the
thread marked as "running" that loop between calls. Left so, every later ``asyncio.run()`` and
every pytest-asyncio test in the session (``asyncio_mode = auto``) would fail with "Cannot run
the event loop while another loop is running". So the mark is set only while a test that uses the
browser runs (its setup, call and teardown phases, see the hooks below) and cleared otherwise:
tests elsewhere in the session, sync or async, never see Playwright's loop.
"""

from __future__ import annotations

import asyncio
import os
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from collections.abc import Generator, Iterator
    from pathlib import Path

    from playwright.sync_api import Browser, BrowserType, Page, Playwright, ViewportSize

DEFAULT_CHROMIUM = "/usr/bin/chromium"
#: SPEC 8; ``--no-sandbox`` because tests run as root here, where Chromium's sandbox refuses to start.
CHROMIUM_ARGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking")
LAUNCH_TIMEOUT_MS = 60_000
#: Default wait of every page action: the UI is a single-page app served by a busy 2-core machine.
ACTION_TIMEOUT_MS = 30_000
VIEWPORT: ViewportSize = {"width": 1400, "height": 1000}


def chromium_path() -> str:
    """The Chromium binary to drive: ``$GETIMAGE_CHROMIUM`` if set, else Debian's."""
    return os.environ.get("GETIMAGE_CHROMIUM") or DEFAULT_CHROMIUM


def missing_chromium(path: str) -> str | None:
    """Why ``path`` cannot be Chromium (a reason to skip), or None if it is an executable file."""
    if not os.path.isfile(path):
        return (
            f"Chromium not found at {path}: `make browser` installs Debian's chromium "
            "(needs root and apt-get), or set GETIMAGE_CHROMIUM to a Chromium binary"
        )
    if not os.access(path, os.X_OK):
        return f"Chromium at {path} is not executable"
    return None


def launch_chromium(browser_type: BrowserType, path: str) -> Browser:
    """
    Start ``path`` headless, or skip the test with the reason it did not start.

    :param browser_type: Playwright's ``chromium`` browser type.
    :param path: the Chromium binary (Playwright's own builds are never used).
    """
    from playwright.sync_api import Error as PlaywrightError

    reason = missing_chromium(path)
    if reason is not None:
        pytest.skip(reason)
    try:
        return browser_type.launch(
            executable_path=path, headless=True, args=list(CHROMIUM_ARGS), timeout=LAUNCH_TIMEOUT_MS
        )
    except PlaywrightError as exc:
        first_lines = " ".join(str(exc).splitlines()[:3])
        pytest.skip(f"Chromium at {path} did not start: {first_lines}")


class _PlaywrightLoop:
    """Marks the thread as running Playwright's loop only while a browser test runs (see above)."""

    loop: asyncio.AbstractEventLoop | None = None

    @classmethod
    def capture(cls) -> None:
        """Remember the loop a fresh Playwright left running in this thread (hidden after the phase)."""
        cls.loop = asyncio.get_running_loop()

    @classmethod
    def show(cls) -> None:
        """Before any Playwright call: its loop must be this thread's running loop again."""
        if cls.loop is not None and not cls.loop.is_closed():
            asyncio._set_running_loop(cls.loop)

    @classmethod
    def hide(cls) -> None:
        """After Playwright calls: no running loop, so ``asyncio.run()`` and async tests work."""
        if cls.loop is not None and asyncio._get_running_loop() is cls.loop:
            asyncio._set_running_loop(None)

    @classmethod
    def forget(cls) -> None:
        cls.hide()
        cls.loop = None


def _uses_browser(item: pytest.Item) -> bool:
    return "browser" in getattr(item, "fixturenames", ())


def _playwright_loop_around(item: pytest.Item) -> Generator[None, None, None]:
    """Show Playwright's loop during a phase of a browser test only; hide it afterwards."""
    if _uses_browser(item):
        _PlaywrightLoop.show()
    try:
        return (yield)
    finally:
        _PlaywrightLoop.hide()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_setup(item: pytest.Item) -> Generator[None, None, None]:
    return (yield from _playwright_loop_around(item))


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Generator[None, None, None]:
    return (yield from _playwright_loop_around(item))


@pytest.hookimpl(wrapper=True)
def pytest_runtest_teardown(item: pytest.Item, nextitem: pytest.Item | None) -> Generator[None, None, None]:
    return (yield from _playwright_loop_around(item))


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """
    Keep each phase's report on the item, so ``page`` knows whether its test failed.

    The twin of the hook in ``tests/conftest.py``, kept here so that this file works on its own
    (``test_browser_fixtures`` runs it in a project of its own).
    """
    report = yield
    setattr(item, f"ui_report_{call.when}", report)
    return report


@pytest.fixture(scope="session")
def browser() -> Iterator[Browser]:
    """Headless Chromium for the session (about 2-3 s to start), or a skip that says why."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError as exc:
        pytest.skip(f"the playwright package is not installed ({exc}): `make install` installs it")
    path = chromium_path()
    reason = missing_chromium(path)
    if reason is not None:  # before starting Playwright's driver: a skip costs nothing
        pytest.skip(reason)
    playwright: Playwright = sync_playwright().start()
    try:
        launched = launch_chromium(playwright.chromium, path)
    except BaseException:
        playwright.stop()
        raise
    _PlaywrightLoop.capture()
    try:
        yield launched
    finally:
        # The session's last test may be anywhere in the suite, outside this folder's hooks.
        _PlaywrightLoop.show()
        try:
            launched.close()
        finally:
            playwright.stop()
            _PlaywrightLoop.forget()


@pytest.fixture
def page(browser: Browser, request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Page]:
    """A page in a fresh context (no cookies or storage shared between tests); a screenshot on failure."""
    context = browser.new_context(viewport=VIEWPORT)
    context.set_default_timeout(ACTION_TIMEOUT_MS)
    new_page = context.new_page()
    try:
        yield new_page
    finally:
        report = getattr(request.node, "ui_report_call", None)
        if report is not None and report.failed and not new_page.is_closed():
            shot = tmp_path / "failure.png"
            try:
                new_page.screenshot(path=str(shot), full_page=True)
                print(f"\nscreenshot of {new_page.url} at failure: {shot}")
            except Exception as exc:  # the page may have crashed: the test's own error matters more
                print(f"\nno screenshot at failure: {exc}")
        context.close()

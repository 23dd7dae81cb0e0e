"""
The GetImage.io connection form and its Test button in the real Airflow UI.

One ``airflow api-server`` (``--apps all``: the UI, its ``/ui`` API and the REST API; nothing
else is needed for connections) serves the module, with ``[core] test_connection = Enabled``:

- ``GET /ui/connections/hook_meta`` is what the UI builds the form from: the type, the "API Key"
  relabel, the host placeholder, the hidden login/schema/port, the extra fields.
- ``POST /api/v2/connections/test`` is what the Test button calls; it runs
  ``GetImageHook.test_connection()`` inside the api-server against the emulator.
- Headless Chromium fills the "Add Connection" dialog, saves it and clicks Test in the list.

On Airflow 3.3.1 and 3.3.2 the list's Test button is refused with 400 for every connection saved
without a port (this provider hides the port): the UI sends ``port: Number(null)``, i.e. ``0``,
and the api-server takes that for another destination. apache/airflow#73298 fixes it. The test
expects that refusal on those versions, then shows the Test button answering through the hook
once the port is stored as well (the workaround), and the CLI's answer.
"""

from __future__ import annotations

import secrets
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import pytest
from airflow import __version__ as airflow_version

from airflow_provider_getimage.get_provider_info import get_provider_info
from harness import AirflowDeployment
from tests.reports import print_log_tails_if_failed

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

    from playwright.sync_api import Page, Response

    from airflow_provider_getimage.emulator import Emulator

pytestmark = pytest.mark.e2e

GOOD_KEY = f"ui-key-{secrets.token_hex(12)}"
BAD_KEY = f"ui-wrong-key-{secrets.token_hex(12)}"
DEFAULT_BASE_URL = "https://api.getimage.io"
#: Airflow versions whose Test button refuses a connection without a port (apache/airflow#73298).
PORTLESS_TEST_REFUSED = airflow_version in ("3.3.1", "3.3.2")
PORTLESS_REFUSAL = "The host or port to test differs from the stored connection"


@pytest.fixture(scope="module")
def emulator() -> Iterator[Emulator]:
    """The API the connections point at; it accepts ``GOOD_KEY`` only."""
    from airflow_provider_getimage.emulator import Emulator

    emulator = Emulator(latency=0.2, seed=0, api_keys=(GOOD_KEY,)).start()
    try:
        yield emulator
    finally:
        emulator.stop()


@pytest.fixture(scope="module")
def airflow_ui() -> Iterator[AirflowDeployment]:
    """Only the api-server: the UI and both APIs; connections need no scheduler or DAG processor."""
    deployment = AirflowDeployment(
        components=("api-server",),
        api_apps="all",
        extra_env={"AIRFLOW__CORE__TEST_CONNECTION": "Enabled"},
    )
    with deployment:
        yield deployment
    print(f"\nairflow api-server: {deployment.report()}")


@pytest.fixture(autouse=True)
def _api_server_log_on_failure(request: pytest.FixtureRequest) -> Iterator[None]:
    """The api-server's log tail when a test using it fails: the reason is usually there."""
    yield
    print_log_tails_if_failed(request, "airflow_ui")


def refusal(base_url: str) -> str:
    """What ``test_connection()`` answers for a refused key: the URL, never the random test conn id."""
    return f"{base_url} refused the API key (HTTP 401): check the API Key (password) of this connection."


def getimage_form_info() -> dict[str, Any]:
    (info,) = get_provider_info()["connection-types"]
    return dict(info)


# ---------------------------------------------------------------------------------- metadata
def test_hook_meta_describes_the_getimage_form(airflow_ui: AirflowDeployment) -> None:
    meta = airflow_ui.api("GET", "/ui/connections/hook_meta")
    ours = [entry for entry in meta if entry["connection_type"] == "getimage"]
    assert len(ours) == 1, [entry["connection_type"] for entry in meta]
    entry = ours[0]
    assert entry["hook_name"] == "GetImage.io"
    assert entry["hook_class_name"] == "airflow_provider_getimage.hooks.getimage.GetImageHook"

    fields = entry["standard_fields"]
    assert fields["password"] == {"hidden": False, "title": "API Key", "placeholder": "GetImage.io API key"}
    assert fields["host"] == {"hidden": False, "title": "Base URL", "placeholder": DEFAULT_BASE_URL}
    for hidden in ("login", "url_schema", "port"):
        assert fields[hidden]["hidden"] is True, hidden

    extras = entry["extra_fields"]
    declared = getimage_form_info()["conn-fields"]
    expected = {"default_model", "request_timeout", "verify", "max_response_bytes", "max_requests_per_second"}
    assert set(extras) == expected == set(declared)
    for name, field in extras.items():
        assert field["schema"]["title"] == declared[name]["label"]
        assert field["schema"]["type"] == declared[name]["schema"]["type"]
        assert field["description"] == declared[name]["description"]
    assert extras["request_timeout"]["schema"]["type"] == ["number", "null"]


def test_rest_connection_test_answers_through_the_hook(
    airflow_ui: AirflowDeployment, emulator: Emulator
) -> None:
    """The endpoint behind the Test button, for a connection not saved (the key in the body)."""
    before = emulator.stats()

    def test(key: str) -> dict[str, Any]:
        body = {"connection_id": "getimage_rest", "conn_type": "getimage", "host": emulator.url}
        return dict(airflow_ui.api("POST", "/api/v2/connections/test", json={**body, "password": key}))

    assert test(GOOD_KEY) == {
        "status": True,
        "message": f"Connected to {emulator.url}: the API key was accepted.",
    }
    assert test(BAD_KEY) == {"status": False, "message": refusal(emulator.url)}
    after = emulator.stats()
    assert after["polls"] - before["polls"] == 2, "one probe per test: the hook asked the emulator"
    assert after["submissions"] == before["submissions"], "testing a connection spends no credits"
    assert after["responses_by_status"].get("401", 0) - before["responses_by_status"].get("401", 0) == 1


# ------------------------------------------------------------------------------------ browser
def open_add_connection(page: Page, airflow: AirflowDeployment) -> Any:
    """``/connections`` -> "Add Connection"; returns the dialog."""
    page.goto(f"{airflow.api_url}/connections")
    page.get_by_role("button", name="Add Connection").click()
    dialog = page.get_by_role("dialog")
    dialog.get_by_role("heading", name="Add Connection").wait_for()
    return dialog


def choose_type(page: Page, dialog: Any, search: str, name: str) -> None:
    combo = dialog.get_by_role("combobox", name="Connection Type")
    combo.fill(search)
    page.get_by_role("option", name=name, exact=True).click()


def click_test(page: Page, conn_id: str) -> Response:
    """Click the list's Test button of ``conn_id``; return the api-server's answer to it."""
    row = page.get_by_role("row").filter(has=page.get_by_role("cell", name=conn_id, exact=True))
    with page.expect_response(lambda r: r.url.endswith("/api/v2/connections/test")) as answer:
        row.get_by_role("button", name="Test Connection").click()
    return answer.value


def toast(page: Page, title: str, text: str) -> None:
    """Wait for the toast ``title`` carrying ``text`` (toasts close by themselves after a few s)."""
    page.get_by_text(title, exact=True).last.wait_for()
    page.get_by_text(text).last.wait_for()


def test_connection_form_and_test_button_in_chromium(
    page: Page, airflow_ui: AirflowDeployment, emulator: Emulator, tmp_path: Path
) -> None:
    conn_id = "getimage_ui"
    dialog = open_add_connection(page, airflow_ui)
    dialog.get_by_label("Connection ID").fill(conn_id)

    # Another type first: its form has Login and Port, so their absence below means something.
    choose_type(page, dialog, "HTTP", "HTTP")
    dialog.get_by_label("Login", exact=True).wait_for()
    assert dialog.get_by_label("Port", exact=True).count() == 1

    choose_type(page, dialog, "GetImage", "GetImage.io")
    api_key = dialog.get_by_label("API Key", exact=True)
    api_key.wait_for()
    assert api_key.get_attribute("type") == "password"
    assert api_key.get_attribute("placeholder") == "GetImage.io API key"
    base_url = dialog.get_by_label("Base URL", exact=True)
    assert base_url.get_attribute("placeholder") == DEFAULT_BASE_URL
    for gone in ("Login", "Port", "Schema", "Password", "Host"):
        assert dialog.get_by_label(gone, exact=True).count() == 0, f"{gone} is shown"

    base_url.fill(emulator.url)
    api_key.fill(GOOD_KEY)
    page.screenshot(path=str(tmp_path / "connection-form.png"))

    # The extra fields (another accordion section; their labels are not tied to their inputs).
    dialog.get_by_role("button", name="Extra Fields", exact=True).click()
    for field in getimage_form_info()["conn-fields"].values():
        label = dialog.get_by_text(field["label"], exact=True)
        label.wait_for()
        row = label.locator("xpath=ancestor::*[@data-part='root'][1]")
        assert row.locator("input").count() == 1, field["label"]
        assert row.get_by_text(field["description"], exact=True).is_visible()
    page.screenshot(path=str(tmp_path / "connection-form-extras.png"))
    dialog.get_by_role("button", name="Save").click()
    page.get_by_role("cell", name=conn_id, exact=True).wait_for()

    saved = airflow_ui.api("GET", f"/api/v2/connections/{conn_id}")
    assert (saved["conn_type"], saved["host"], saved["login"], saved["port"], saved["schema"]) == (
        "getimage",
        emulator.url,
        None,
        None,
        None,
    )
    assert saved["password"] == "***"
    # What the browser typed may linger in the closing dialog's DOM; what matters is that the
    # server never sends the key back, so look at a page built from the server's answers only.
    dialog.wait_for(state="detached")
    page.reload()
    page.get_by_role("cell", name=conn_id, exact=True).wait_for()
    assert GOOD_KEY not in page.content(), "the key is never sent back to the browser"

    # The Test button of the connection as saved through the form (no port).
    answer = click_test(page, conn_id)
    if PORTLESS_TEST_REFUSED:
        assert answer.status == 400
        assert PORTLESS_REFUSAL in answer.json()["detail"]
        toast(page, "Test Connection Failed", "Bad Request")
        page.screenshot(path=str(tmp_path / "test-button-portless-refused.png"))
        # The workaround until Airflow has apache/airflow#73298: store the port too.
        port = urlsplit(emulator.url).port
        airflow_ui.api(
            "PATCH",
            f"/api/v2/connections/{conn_id}",
            params={"update_mask": "port"},
            json={"connection_id": conn_id, "conn_type": "getimage", "port": port},
        )
        page.reload()
        answer = click_test(page, conn_id)
    success = f"Connected to {emulator.url}: the API key was accepted."
    assert answer.status == 200
    assert answer.json() == {"status": True, "message": success}
    toast(page, "Test Connection Successful", success)
    page.screenshot(path=str(tmp_path / "test-button-success.png"))

    # A wrong key: False, with the reason, in a toast.
    bad_id = "getimage_ui_bad_key"
    emulator_url = urlsplit(emulator.url)
    airflow_ui.api(
        "POST",
        "/api/v2/connections",
        json={
            "connection_id": bad_id,
            "conn_type": "getimage",
            "host": emulator.url,
            "port": emulator_url.port,
            "password": BAD_KEY,
        },
    )
    page.reload()
    answer = click_test(page, bad_id)
    assert answer.json() == {"status": False, "message": refusal(emulator.url)}
    toast(page, "Test Connection Failed", refusal(emulator.url))
    page.screenshot(path=str(tmp_path / "test-button-bad-key.png"))
    html = page.content()
    assert GOOD_KEY not in html
    assert BAD_KEY not in html
    print(f"\nscreenshots: {sorted(p.name for p in tmp_path.glob('*.png'))} in {tmp_path}")


def test_cli_connection_test_answers_for_a_portless_connection(
    airflow_ui: AirflowDeployment, emulator: Emulator
) -> None:
    """``airflow connections test``: the other way to test while the UI refuses (README)."""
    conn_id = "getimage_cli"
    airflow_ui.api(
        "POST",
        "/api/v2/connections",
        json={"connection_id": conn_id, "conn_type": "getimage", "host": emulator.url, "password": GOOD_KEY},
    )
    polls = emulator.stats()["polls"]
    result = airflow_ui.run_cli("connections", "test", conn_id)
    assert "Connection success!" in result.stdout, result.stdout + result.stderr
    assert emulator.stats()["polls"] == polls + 1, "the hook's probe reached the emulator"
    assert GOOD_KEY not in result.stdout + result.stderr

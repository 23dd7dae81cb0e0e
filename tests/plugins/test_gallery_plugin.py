"""The ``getimage_gallery`` plugin's registration, and that loading it costs a task process nothing."""

from __future__ import annotations

import subprocess
import sys
from importlib.metadata import entry_points
from typing import TYPE_CHECKING

from airflow_provider_getimage.get_provider_info import get_provider_info
from airflow_provider_getimage.plugins.gallery import GalleryApp, GetImageGalleryPlugin
from tests.airflow_compat import requires_airflow

if TYPE_CHECKING:
    import pytest


def test_plugin_is_registered_once_by_entry_point() -> None:
    plugins = entry_points(group="airflow.plugins")
    (entry,) = [e for e in plugins if e.value.startswith("airflow_provider_getimage")]
    assert entry.load() is GetImageGalleryPlugin
    assert entry.name == GetImageGalleryPlugin.name == "getimage_gallery"
    # Not in the provider info too: with lazy_discover_providers = False, Airflow would load it
    # twice and list "already registered" as a plugin import error.
    assert "plugins" not in get_provider_info()


@requires_airflow("3.3", "plugins_manager._get_plugins (the plugin loader this test drives)")
def test_eager_provider_discovery_reports_no_plugin_error(monkeypatch: pytest.MonkeyPatch) -> None:
    from airflow import plugins_manager, settings

    monkeypatch.setattr(settings, "LAZY_LOAD_PROVIDERS", False)
    plugins_manager._get_plugins.cache_clear()
    try:
        plugins, errors = plugins_manager._get_plugins()
        assert "getimage_gallery" in [plugin.name for plugin in plugins]
        assert not {name: error for name, error in errors.items() if "getimage" in f"{name}{error}"}
    finally:
        plugins_manager._get_plugins.cache_clear()


@requires_airflow("3.3", "api_fastapi.app.RESERVED_URL_PREFIXES and plugin external views")
def test_airflow_accepts_the_plugin_and_its_mount_point() -> None:
    from airflow.api_fastapi.app import RESERVED_URL_PREFIXES
    from airflow.plugins_manager import is_valid_plugin

    assert is_valid_plugin(GetImageGalleryPlugin)
    (app,) = GetImageGalleryPlugin.fastapi_apps
    assert isinstance(app["app"], GalleryApp)
    assert not any(app["url_prefix"].startswith(prefix) for prefix in RESERVED_URL_PREFIXES)
    views = GetImageGalleryPlugin.external_views
    assert [view["destination"] for view in views] == ["task_instance", "dag_run", "dag"]
    for view in views:
        assert not view["href"].startswith("/"), "relative, so the UI resolves it under its base URL"
        assert view["url_route"]
    assert len({view["url_route"] for view in views}) == len(views)


@requires_airflow("3.3", "the Task SDK's own plugins_manager")
def test_a_task_process_loads_the_plugin_without_fastapi() -> None:
    """Workers load plugins for every task (macros): the gallery's app must wait for the API server."""
    code = (
        "import sys\n"
        "import airflow.sdk.execution_time.task_runner\n"
        "from airflow.sdk.plugins_manager import _get_plugins, integrate_macros_plugins\n"
        "assert 'fastapi' not in sys.modules, 'imported before the plugin: the test proves nothing'\n"
        "integrate_macros_plugins()\n"
        "assert 'getimage_gallery' in [p.name for p in _get_plugins()[0]], _get_plugins()\n"
        "heavy = ('fastapi', 'airflow_provider_getimage.plugins.gallery_app')\n"
        "heavy = [m for m in heavy if m in sys.modules]\n"
        "sys.exit(str(heavy) if heavy else 0)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], check=False, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]

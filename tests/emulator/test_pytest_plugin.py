"""The pytest plugin (``pytest_plugin.py``), loaded as a DAG author's project loads it."""

from __future__ import annotations

import subprocess
import sys
import textwrap

from tests.emulator.helpers import (
    REPO_ROOT,
    child_env,
)


def test_pytest_plugin_fixtures(tmp_path):
    """Run the plugin in a child pytest, as a DAG author's project would load it."""
    (tmp_path / "pytest.ini").write_text("[pytest]\n")
    (tmp_path / "test_uses_plugin.py").write_text(
        textwrap.dedent(
            """
            import json
            import sys

            import pytest
            import requests


            def test_default_fixture(getimage_emulator):
                assert getimage_emulator.config.latency == 0.5
                assert getimage_emulator.config.seed == 0
                response = requests.get(getimage_emulator.url + "/_emulator/health", timeout=5)
                assert response.json() == {"status": "ok"}


            @pytest.mark.getimage_emulator(latency=0.1, image_format="objects")
            def test_marker_knobs(getimage_emulator):
                assert getimage_emulator.config.latency == 0.1
                assert getimage_emulator.config.image_format == "objects"


            def test_factory(getimage_emulator_factory):
                first = getimage_emulator_factory(failure_rate=1.0)
                second = getimage_emulator_factory()
                assert first.url != second.url
                assert first.config.failure_rate == 1.0
                assert first.config.latency == 0.5


            def test_airflow_conn(getimage_airflow_conn):
                import os

                conn = json.loads(os.environ["AIRFLOW_CONN_GETIMAGE_DEFAULT"])
                assert conn["host"] == getimage_airflow_conn.url
            """
        )
    )
    env = {**child_env(), "PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1"}
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-p",
            "airflow_provider_getimage.emulator.pytest_plugin",
            "-p",
            "no:cacheprovider",
            "--strict-markers",
            "-q",
            str(tmp_path),
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "4 passed" in result.stdout


def test_plugin_import_is_light():
    """Pytest imports the plugin in every run, so it must not pull in the server stack."""
    code = (
        "import sys, airflow_provider_getimage.emulator.pytest_plugin, airflow_provider_getimage.emulator;"
        "heavy = [m for m in ('airflow_provider_getimage.emulator.runner', "
        "'airflow_provider_getimage.emulator.app', "
        "'airflow_provider_getimage.emulator.tls', 'aiohttp.web') if m in sys.modules];"
        "assert not heavy, heavy"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=REPO_ROOT,
        env=child_env(),
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 0, result.stderr

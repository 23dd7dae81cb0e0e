"""The provider registers with Airflow: schema-valid provider info, discovered connection type."""

from __future__ import annotations

import json
import subprocess
import sys
from importlib import resources
from importlib.metadata import entry_points
from typing import Any

import jsonschema

from airflow_provider_getimage import __version__
from airflow_provider_getimage.get_provider_info import get_provider_info


def test_provider_info_is_valid_against_airflows_schema() -> None:
    schema = json.loads((resources.files("airflow") / "provider_info.schema.json").read_text())
    jsonschema.validate(get_provider_info(), schema)


def test_entry_point_points_at_get_provider_info() -> None:
    (entry,) = [
        e
        for e in entry_points(group="apache_airflow_provider")
        if e.value.startswith("airflow_provider_getimage")
    ]
    assert entry.load() is get_provider_info
    assert get_provider_info()["package-name"] == "airflow-provider-getimage"
    assert get_provider_info()["versions"] == [__version__]


def test_every_registered_module_and_class_imports() -> None:
    import importlib

    info = get_provider_info()
    modules = [
        m
        for section in ("hooks", "operators", "sensors", "triggers")
        for item in info[section]
        for m in item["python-modules"]
    ]
    for module in modules:
        importlib.import_module(module)
    for conn in info["connection-types"]:
        module, _, name = conn["hook-class-name"].rpartition(".")
        hook = getattr(importlib.import_module(module), name)
        assert hook.conn_type == conn["connection-type"] == "getimage"
        assert hook.hook_name == conn["hook-name"] == "GetImage.io"
        assert hook.default_conn_name == "getimage_default"


def test_providers_manager_discovers_the_connection_form() -> None:
    from airflow.providers_manager import ProvidersManager

    try:
        from airflow.sdk.providers_manager_runtime import ProvidersManagerTaskRuntime
    except ImportError:  # Airflow < 3.2: the one ProvidersManager also knows the hooks
        runtime: Any = ProvidersManager()
    else:
        runtime = ProvidersManagerTaskRuntime()

    manager = ProvidersManager()
    assert "airflow-provider-getimage" in manager.providers
    hook = runtime.hooks["getimage"]
    assert hook is not None
    assert hook.hook_class_name == "airflow_provider_getimage.hooks.getimage.GetImageHook"
    assert hook.connection_id_attribute_name == "getimage_conn_id"
    behaviour = manager.field_behaviours["getimage"]
    assert set(behaviour["hidden_fields"]) == {"login", "schema", "port"}
    assert behaviour["relabeling"]["password"] == "API Key"
    widgets = {name for name in manager.connection_form_widgets if name.startswith("extra__getimage__")}
    assert widgets == {
        "extra__getimage__default_model",
        "extra__getimage__request_timeout",
        "extra__getimage__verify",
        "extra__getimage__max_response_bytes",
        "extra__getimage__max_requests_per_second",
    }


def test_runtime_code_never_imports_the_emulator() -> None:
    """The emulator is a test tool: importing the provider's runtime modules must not load it."""
    code = (
        "import sys\n"
        "import airflow_provider_getimage.get_provider_info\n"
        "import airflow_provider_getimage.hooks.getimage\n"
        "import airflow_provider_getimage.operators.getimage\n"
        "sys.exit(any(m.startswith('airflow_provider_getimage.emulator') for m in sys.modules))\n"
    )
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0


def test_emulator_never_imports_the_rules() -> None:
    """The emulator must not share the provider's rules, so a wrong rule cannot hide on both sides."""
    code = (
        "import sys\n"
        "import airflow_provider_getimage.emulator.runner, airflow_provider_getimage.emulator.cli\n"
        "sys.exit('airflow_provider_getimage._rules' in sys.modules or 'airflow' in sys.modules)\n"
    )
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0


def test_trigger_module_is_light_for_the_triggerer_loop() -> None:
    """The triggerer imports a trigger's module on its event loop: the hooks load later, in a thread."""
    code = (
        "import sys, airflow.triggers.base\n"
        "import airflow_provider_getimage.triggers.getimage, airflow_provider_getimage.triggers.batch\n"
        "heavy = ['airflow_provider_getimage.hooks.getimage', 'airflow.providers.http.hooks.http']\n"
        "heavy = [m for m in heavy if m in sys.modules]\n"
        "sys.exit(str(heavy) if heavy else 0)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], check=False, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_the_batch_trigger_does_not_import_the_diffusion_trigger() -> None:
    """No cycle between the triggers: both take the lazy hook import from ``hooks.lazy``."""
    code = (
        "import sys, airflow_provider_getimage.triggers.batch\n"
        "sys.exit('airflow_provider_getimage.triggers.getimage' in sys.modules)\n"
    )
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0
    from airflow_provider_getimage.triggers import batch, getimage

    assert getimage.GetImageBatchTrigger is batch.GetImageBatchTrigger


def test_sensor_and_trigger_load_no_operator_and_no_storage() -> None:
    """What both need lives below them (``polling``): the sensor imports no operator module."""
    code = (
        "import sys\n"
        "import airflow_provider_getimage.sensors.getimage, airflow_provider_getimage.triggers.getimage\n"
        "import airflow_provider_getimage.triggers.batch\n"
        "loaded = [m for m in sys.modules if m.startswith('airflow_provider_getimage.')]\n"
        "bad = [m for m in loaded if m.startswith('airflow_provider_getimage.operators')\n"
        "       or m in ('airflow_provider_getimage.storage', 'airflow_provider_getimage.hooks.images',\n"
        "                'airflow_provider_getimage.batch')]\n"
        "sys.exit(str(bad) if bad else 0)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], check=False, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_operators_that_return_image_urls_say_so() -> None:
    """Downloads find their upstream URLs by this class attribute, not by importing the classes."""
    from airflow_provider_getimage.operators.getimage import (
        GetImageDiffusionOperator,
        GetImageDownloadOperator,
    )
    from airflow_provider_getimage.sensors.getimage import GetImageDiffusionSensor

    assert GetImageDiffusionOperator.returns_image_urls is True
    assert GetImageDiffusionSensor.returns_image_urls is True
    assert not getattr(GetImageDownloadOperator, "returns_image_urls", False)

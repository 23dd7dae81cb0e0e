"""
The provider's registration with Airflow (the ``apache_airflow_provider`` entry point).

The connection form is declared here (``conn-fields`` / ``ui-field-behaviour``) because Airflow 3
reads these without importing the hook or needing wtforms; the hook repeats it for older UIs.
"""

from __future__ import annotations

from typing import Any

from airflow_provider_getimage import __version__

_DEFAULT_BASE_URL = "https://api.getimage.io"


def get_provider_info() -> dict[str, Any]:
    """Return the provider metadata Airflow's ProvidersManager reads (valid against its schema)."""
    return {
        "package-name": "airflow-provider-getimage",
        "name": "GetImage.io",
        "description": "Text-to-image generation with `GetImage.io <https://getimage.io/>`__ "
        "(Midjourney and other models): submit diffusions, wait for them, collect the images.",
        "versions": [__version__],
        "integrations": [
            {
                "integration-name": "GetImage.io",
                "external-doc-url": "https://getimage.io/",
                "tags": ["software"],
            }
        ],
        "hooks": [
            {
                "integration-name": "GetImage.io",
                "python-modules": ["airflow_provider_getimage.hooks.getimage"],
            }
        ],
        "operators": [
            {
                "integration-name": "GetImage.io",
                "python-modules": [
                    "airflow_provider_getimage.operators.getimage",
                    "airflow_provider_getimage.operators.batch",
                ],
            }
        ],
        "sensors": [
            {
                "integration-name": "GetImage.io",
                "python-modules": ["airflow_provider_getimage.sensors.getimage"],
            }
        ],
        "triggers": [
            {
                "integration-name": "GetImage.io",
                "python-modules": [
                    "airflow_provider_getimage.triggers.getimage",
                    "airflow_provider_getimage.triggers.batch",
                ],
            }
        ],
        "task-decorators": [
            {
                "name": "getimage",
                "class-name": "airflow_provider_getimage.decorators.getimage.getimage_task",
            }
        ],
        "extra-links": ["airflow_provider_getimage.links.getimage.GetImageImagesLink"],
        # The gallery plugin is registered by the `airflow.plugins` entry point only: Airflow 3.3
        # loads that always, and with `[core] lazy_discover_providers = False` it would load a
        # "plugins" entry here as well and report the second one as an import error.
        "connection-types": [
            {
                "connection-type": "getimage",
                "hook-class-name": "airflow_provider_getimage.hooks.getimage.GetImageHook",
                "hook-name": "GetImage.io",
                "ui-field-behaviour": {
                    "hidden-fields": ["login", "schema", "port"],
                    "relabeling": {"password": "API Key", "host": "Base URL"},
                    "placeholders": {
                        "host": _DEFAULT_BASE_URL,
                        "password": "GetImage.io API key",
                    },
                },
                "conn-fields": {
                    "default_model": {
                        "label": "Default model",
                        "schema": {"type": ["string", "null"]},
                        "description": "Model used when a task names none (midjourney if empty).",
                    },
                    "request_timeout": {
                        "label": "Request timeout (seconds)",
                        "schema": {"type": ["number", "null"]},
                        "description": "Seconds one API request may take in all, the whole answer "
                        "included (30 if empty).",
                    },
                    "max_response_bytes": {
                        "label": "Max response size (bytes)",
                        "schema": {"type": ["integer", "null"]},
                        "description": "Largest API answer read, in bytes; a larger one is abandoned "
                        "(1048576 if empty).",
                    },
                    "verify": {
                        "label": "Verify TLS",
                        "schema": {"type": ["string", "null"]},
                        "description": "true (default), false, or the path of a CA bundle file.",
                    },
                    "max_requests_per_second": {
                        "label": "Max requests per second",
                        "schema": {"type": ["number", "null"]},
                        "description": "One rate limit for this connection, shared by every trigger "
                        "in a triggerer process and by a worker's submissions (no limit if empty).",
                    },
                },
            }
        ],
    }

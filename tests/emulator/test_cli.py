"""The ``getimage-emulator`` command (``cli.py``): flags made from the config, and the process."""

from __future__ import annotations

import dataclasses
import signal
import subprocess
import sys
import time

import requests

from airflow_provider_getimage.emulator import EmulatorConfig
from airflow_provider_getimage.emulator.cli import build_parser, config_from_args
from tests.emulator.helpers import (
    REPO_ROOT,
    child_env,
    free_port,
)


def test_every_knob_has_a_flag_with_help():
    """Flags are made from the config's fields: a new knob gets one, and must say what it does."""
    actions = {action.dest: action for action in build_parser()._actions}
    for spec in dataclasses.fields(EmulatorConfig):
        action = actions[spec.name]
        assert action.option_strings, spec.name
        assert (action.help or "").strip(), spec.name


def test_flags_map_onto_the_config():
    parser = build_parser()
    assert config_from_args(parser.parse_args([])) == EmulatorConfig(port=8000)
    args = parser.parse_args(
        ["--api-key", "k1", "--api-key", "k2", "--fail-prompt", "boom", "--tls", "--rate-limit", "2.5"]
    )
    config = config_from_args(args)
    assert config.api_keys == ("k1", "k2")  # given keys replace the default one
    assert config.failing_prompts == ("boom",)
    assert config.tls is True
    assert config.rate_limit == 2.5
    assert "(default: emulator-key)" in parser.format_help()


def test_cli_serves_until_sigterm(tmp_path):
    port = free_port()
    ready = tmp_path / "ready"
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "airflow_provider_getimage.emulator",
            "--port",
            str(port),
            "--ready-file",
            str(ready),
            "--latency",
            "0",
            "--api-key",
            "k1",
            "--api-key",
            "k2",
            "--fail-prompt",
            "boom",
            "--image-format",
            "objects",
        ],
        cwd=REPO_ROOT,
        env=child_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 15
        while not ready.exists():
            assert process.poll() is None, process.communicate()
            assert time.monotonic() < deadline, "emulator did not become ready"
            time.sleep(0.05)
        url = ready.read_text().strip()
        assert url == f"http://127.0.0.1:{port}"
        headers = {"Authorization": "Bearer k2"}
        created = requests.post(
            f"{url}/v1/diffusions", json={"prompt": "boom box"}, headers=headers, timeout=5
        )
        assert created.status_code == 201
        record = requests.get(
            f"{url}/v1/diffusions/{created.json()['id']}", headers=headers, timeout=5
        ).json()
        assert record["status"] == "FAILED"
        assert requests.get(f"{url}/_emulator/stats", timeout=5).json()["submissions"] == 1

        process.send_signal(signal.SIGTERM)
        stdout, stderr = process.communicate(timeout=10)
        assert process.returncode == 0, stderr
        assert f"GetImage.io emulator listening on {url}" in stdout
        assert "Traceback" not in stderr
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_cli_rejects_bad_knobs():
    result = subprocess.run(
        [sys.executable, "-m", "airflow_provider_getimage.emulator", "--failure-rate", "3"],
        cwd=REPO_ROOT,
        env=child_env(),
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 2
    assert "failure_rate" in result.stderr

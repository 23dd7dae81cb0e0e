"""
``make demo``: the example DAG through real Airflow against the local emulator, end to end.

Starts the emulator, points the ``getimage_default`` connection at it (an environment variable),
migrates a throw-away sqlite Airflow home under ``.demo/``, runs ``airflow dags test
example_getimage`` and prints the PNG files the run saved under ``demo-output/``. The emulator
is stopped whatever happens.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEMO_HOME = REPO / ".demo"
OUTPUT = REPO / "demo-output"
BIN = Path(sys.executable).parent
DAG_ID = "example_getimage"
EMULATOR_KEY = "demo-emulator-key"


def start_emulator(ready_file: Path) -> tuple[subprocess.Popen[bytes], str]:
    """Start the emulator on a free port and wait until it says where it listens."""
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "airflow_provider_getimage.emulator",
            "--port",
            "0",
            "--latency",
            "4",
            "--api-key",
            EMULATOR_KEY,
            "--ready-file",
            str(ready_file),
        ],
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if ready_file.exists() and ready_file.read_text().strip():
            return process, ready_file.read_text().strip()
        if process.poll() is not None:
            raise SystemExit(f"The emulator exited early with code {process.returncode}.")
        time.sleep(0.1)
    process.kill()
    raise SystemExit("The emulator did not start within 30 s.")


def stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def main() -> int:
    shutil.rmtree(DEMO_HOME, ignore_errors=True)
    DEMO_HOME.mkdir(parents=True)
    OUTPUT.mkdir(exist_ok=True)
    started = time.time()
    ready_file = Path(tempfile.mkdtemp(prefix="getimage-demo-")) / "emulator-url"
    emulator, url = start_emulator(ready_file)
    try:
        env = {
            **os.environ,
            "AIRFLOW_HOME": str(DEMO_HOME / "airflow"),
            "AIRFLOW__CORE__DAGS_FOLDER": str(REPO / "example_dags"),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{DEMO_HOME}/airflow/airflow.db",
            "AIRFLOW_CONN_GETIMAGE_DEFAULT": json.dumps(
                {"conn_type": "getimage", "host": url, "password": EMULATOR_KEY}
            ),
            "GETIMAGE_OUTPUT_DIR": str(OUTPUT),
        }
        print(f"Emulator at {url}; Airflow home {DEMO_HOME / 'airflow'}", flush=True)
        subprocess.run(
            [str(BIN / "airflow"), "db", "migrate"], env=env, check=True, stdout=subprocess.DEVNULL
        )
        run = subprocess.run([str(BIN / "airflow"), "dags", "test", DAG_ID], env=env, check=False)
        if run.returncode != 0:
            print(f"airflow dags test {DAG_ID} failed with exit code {run.returncode}.", file=sys.stderr)
            return run.returncode
    finally:
        stop(emulator)
        shutil.rmtree(ready_file.parent, ignore_errors=True)

    images = sorted(p for p in OUTPUT.rglob("*.png") if p.stat().st_mtime >= started - 1)
    if not images:
        print(f"The DAG run succeeded but saved no image under {OUTPUT}.", file=sys.stderr)
        return 1
    print(f"\nThe example DAG saved {len(images)} image(s) under {OUTPUT}:")
    for image in images:
        print(f"  {image}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

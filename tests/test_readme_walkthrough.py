"""
The README's walk-through ("Five minutes to images in the Airflow UI"), replayed from the README.

The bash block is parsed out of README.md and run as written, in a throw-away ``HOME`` (so every
``~`` of it is a temporary folder), with these differences, each for a reason:

- ``python3 -m venv ~/getimage-venv``: the test builds that virtualenv itself, from the locked
  dependencies of ``.venv`` (linked, not downloaded: a test installs nothing from the network);
  the block's ``. ~/getimage-venv/bin/activate`` then runs as written.
- ``pip install .``: the wheel of ``python -m build`` (what ``make dist`` builds), installed with
  ``--no-deps`` into that virtualenv, so the provider is the wheel's layout, not the checkout's.
- Port 8000 (the emulator) is a free port, and the api-server and log servers get free ports too
  (environment only), so the test runs beside other deployments on this machine.

``airflow standalone`` runs for real (its api-server, scheduler, dag-processor and triggerer);
the test then triggers ``example_getimage_mapped`` with the README's own command, waits for the
run, and checks what the README promises: the connection test's success, the example DAGs once
each from the DAGs folder and no bundle of examples, 12 PNGs in ``~/getimage-images/<run id>/``,
the gallery page of a task with its images, a task log that ends with the gallery's URL. What it
cannot replay is the browser (logging in, clicking Trigger): tests/ui does that part.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shlex
import signal
import sqlite3
import subprocess
import sys
import sysconfig
import time
import venv
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import quote

import pytest
import requests

from harness import free_port

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
SECTION = "## Five minutes to images in the Airflow UI"
EXAMPLE_DAG_IDS = {
    "example_getimage",
    "example_getimage_assets_consumer",
    "example_getimage_assets_producer",
    "example_getimage_batch",
    "example_getimage_decorator",
    "example_getimage_deferrable",
    "example_getimage_mapped",
    "example_getimage_review",
    "example_getimage_sensor",
}
"""Every DAG of the package's example_dags, which the block copies (a test below checks the list)."""
#: Names in the locked site-packages that are the provider itself (the editable install).
PROVIDER_ENTRIES = ("airflow_provider_getimage", "_editable_impl_airflow_provider_getimage", "__editable__")


def readme_section() -> str:
    text = README.read_text()
    assert SECTION in text, f"README has no section {SECTION!r}"
    return text.split(SECTION, 1)[1].split("\n## ", 1)[0]


def walkthrough_commands() -> list[str]:
    """The block's commands, one per entry, continuation lines joined."""
    match = re.search(r"```bash\n(.*?)```", readme_section(), re.S)
    assert match, "the walk-through is one ```bash block"
    joined = match.group(1).replace("\\\n", " ")
    return [line.strip() for line in joined.splitlines() if line.strip() and not line.startswith("#")]


def trigger_command() -> str:
    """The README's "From another terminal" command, as written."""
    prose = " ".join(readme_section().split())
    match = re.search(r"From another terminal: `([^`]*dags trigger[^`]*)`", prose)
    assert match, "the README says how to trigger from a terminal"
    return match.group(1)


def test_the_block_is_one_copy_paste_block_ending_in_standalone() -> None:
    commands = walkthrough_commands()
    assert commands[0].startswith("python3 -m venv ~/getimage-venv && . ~/getimage-venv/bin/activate")
    assert commands[1].startswith("pip install .")
    assert commands[-1].startswith("airflow standalone")
    assert not any(command.startswith("pip install airflow-provider-getimage") for command in commands), (
        "not published: the walk-through must not need PyPI"
    )


def replayed_script(commands: list[str], wheel: Path, emulator_port: int) -> str:
    """The block as this test runs it (see the module docstring for each difference)."""
    lines = ["set -euo pipefail"]
    for command in commands:
        if command.startswith("python3 -m venv ~/getimage-venv && "):
            command = command.split(" && ", 1)[1]  # the venv exists: the test made it
        elif command.startswith("pip install ."):
            command = f"pip install --quiet --no-deps --no-index {shlex.quote(str(wheel))}"
        elif command.startswith("airflow standalone"):
            command = "exec " + command
        lines.append(command.replace("8000", str(emulator_port)))
    return "\n".join(lines) + "\n"


def make_virtualenv(root: Path) -> Path:
    """A virtualenv with the locked dependencies of this one, linked, and without the provider."""
    venv.create(root, with_pip=False, symlinks=True)
    version = f"python{sys.version_info.major}.{sys.version_info.minor}"
    site = root / "lib" / version / "site-packages"
    for entry in Path(sysconfig.get_paths()["purelib"]).iterdir():
        if not entry.name.startswith(PROVIDER_ENTRIES) and not (site / entry.name).exists():
            (site / entry.name).symlink_to(entry)
    # The console scripts the block calls before the wheel brings its own (getimage-emulator).
    for name, module in (("airflow", "airflow.__main__"), ("pip", "pip._internal.cli.main")):
        script = root / "bin" / name
        script.write_text(f"#!{root}/bin/python\nimport sys\nfrom {module} import main\n\nsys.exit(main())\n")
        script.chmod(0o755)
    return root


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``python -m build --wheel`` (isolated, the backend pinned by constraints.txt), about 20 s."""
    out = tmp_path_factory.mktemp("dist")
    result = subprocess.run(
        [sys.executable, "-m", "build", "--wheel", "--outdir", str(out), str(REPO)],
        capture_output=True,
        text=True,
        env=dict(os.environ, PIP_CONSTRAINT=str(REPO / "constraints.txt")),
        timeout=300,
        check=False,
    )
    if result.returncode != 0:
        output = result.stdout + result.stderr
        if "build-requirements" in output or "install_dependencies" in output:
            pytest.skip("the build backend (hatchling) could not be installed: no package index reachable?")
        pytest.fail(f"python -m build failed:\n{output[-4000:]}")
    (built,) = out.glob("*.whl")
    return built


class Walkthrough:
    """The replayed block running: its home, its output, its database."""

    def __init__(
        self, home: Path, process: subprocess.Popen[bytes], output: Path, env: dict[str, str]
    ) -> None:
        self.home = home
        self.process = process
        self.output = output
        self.env = env
        self.airflow_home = home / "getimage-airflow"

    def text(self) -> str:
        return self.output.read_text(errors="replace")

    def query(self, sql: str, params: tuple[object, ...] = ()) -> list[tuple[object, ...]]:
        database = self.airflow_home / "airflow.db"
        if not database.exists():
            return []
        try:
            with sqlite3.connect(f"file:{database}?mode=ro", uri=True, timeout=10) as db:
                return db.execute(sql, params).fetchall()
        except sqlite3.OperationalError:
            return []  # not migrated yet

    def wait_for(self, what: str, check: Callable[[], bool], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if check():
                return
            if self.process.poll() is not None:
                pytest.fail(
                    f"the walk-through ended (code {self.process.returncode}) before {what}:\n{self.tail()}"
                )
            time.sleep(1)
        pytest.fail(f"no {what} within {timeout:g} s:\n{self.tail()}")

    def tail(self, lines: int = 80) -> str:
        return "\n".join(self.text().splitlines()[-lines:])


@pytest.fixture(scope="module")
def walkthrough(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Walkthrough]:
    home = tmp_path_factory.mktemp("home")
    make_virtualenv(home / "getimage-venv")
    api_port = free_port()
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("AIRFLOW", "_AIRFLOW", "GETIMAGE", "VIRTUAL_ENV", "PYTEST", "PIP_"))
    }
    env["PATH"] = os.pathsep.join(
        part for part in env.get("PATH", "").split(os.pathsep) if Path(part) != Path(sys.executable).parent
    )
    env.update(
        {
            "HOME": str(home),
            "PYTHONUNBUFFERED": "1",
            # Ports of its own (a fixed 8080, 8793 or 8794 may be taken by another deployment).
            "AIRFLOW__API__PORT": str(api_port),
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://localhost:{api_port}/execution/",
            "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(free_port()),
            "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": str(free_port()),
            # On 2 busy cores a task's call to the execution API can take longer than 5 s.
            "AIRFLOW__WORKERS__EXECUTION_API_TIMEOUT": "30",
        }
    )
    script = replayed_script(walkthrough_commands(), wheel, free_port())
    output = home / "walkthrough.log"
    with output.open("wb") as sink:
        process = subprocess.Popen(
            ["bash", "-c", script],
            cwd=REPO,
            env=env,
            stdout=sink,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    run = Walkthrough(home, process, output, env)
    try:
        yield run
    finally:
        stop_group(process)
        print(f"\nwalk-through output (last lines):\n{run.tail(40)}")


def stop_group(process: subprocess.Popen[bytes]) -> None:
    """Ctrl-C for standalone (it stops its components), then the group it leads (the emulator)."""
    if process.poll() is None:
        process.send_signal(signal.SIGINT)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=60)
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            return
        group_gone(process.pid, timeout=3)  # the emulator is gone in well under a second
    process.wait(timeout=30)


def group_gone(pgid: int, timeout: float) -> bool:
    """Wait up to ``timeout`` s for process group ``pgid`` to be empty; whether it is."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.1)


def test_the_walkthrough_gets_to_images(walkthrough: Walkthrough) -> None:
    airflow_home = walkthrough.airflow_home

    def parsed() -> bool:
        return {row[0] for row in walkthrough.query("SELECT dag_id FROM dag")} >= EXAMPLE_DAG_IDS

    walkthrough.wait_for("example DAGs parsed", parsed, timeout=420)
    text = walkthrough.text()
    assert "Connection success!" in text, "airflow connections test, as the block runs it"
    rows = walkthrough.query("SELECT dag_id, bundle_name, fileloc FROM dag")
    assert {row[0] for row in rows} == EXAMPLE_DAG_IDS, "no Airflow examples, nothing but the copies"
    assert {row[1] for row in rows} == {"dags-folder"}, rows
    assert all(str(row[2]).startswith(str(airflow_home / "dags")) for row in rows), rows
    bundles = {str(row[0]) for row in walkthrough.query("SELECT name FROM dag_bundle")}
    assert not any("example" in name for name in bundles), f"no example bundle: {bundles}"

    # The README's terminal command, as written (~ is this test's home).
    command = trigger_command().replace("~", str(walkthrough.home))
    done = subprocess.run(
        command, shell=True, env=walkthrough.env, capture_output=True, text=True, timeout=180, check=False
    )
    assert done.returncode == 0, done.stdout + done.stderr

    def finished() -> bool:
        states = walkthrough.query("SELECT state FROM dag_run WHERE dag_id = 'example_getimage_mapped'")
        return bool(states) and states[0][0] in ("success", "failed")

    walkthrough.wait_for("a finished run", finished, timeout=420)
    ((run_id, state),) = walkthrough.query(
        "SELECT run_id, state FROM dag_run WHERE dag_id = 'example_getimage_mapped'"
    )
    assert state == "success", walkthrough.tail()
    pngs = sorted((walkthrough.home / "getimage-images" / str(run_id)).glob("*.png"))
    assert len(pngs) == 12, pngs
    assert all(png.read_bytes().startswith(b"\x89PNG") for png in pngs)

    # The password standalone printed is also in the file the README names.
    passwords = json.loads((airflow_home / "simple_auth_manager_passwords.json.generated").read_text())
    api = f"http://localhost:{walkthrough.env['AIRFLOW__API__PORT']}"
    token = requests.post(
        f"{api}/auth/token", json={"username": "admin", "password": passwords["admin"]}, timeout=30
    ).json()["access_token"]
    path = f"/getimage/gallery/example_getimage_mapped/{quote(str(run_id), safe='')}/generate?map_index=0"
    page = requests.get(api + path, headers={"Authorization": f"Bearer {token}"}, timeout=30)
    assert page.status_code == 200, page.text[:2000]
    assert page.text.count("<img") >= 4, "the task's four images"

    task_logs = airflow_home.glob(
        "logs/dag_id=example_getimage_mapped/run_id=*/task_id=generate/map_index=0/*"
    )
    logs = sorted(path for path in task_logs if re.fullmatch(r"attempt=\d+\.log", path.name))
    assert logs, sorted(str(p) for p in airflow_home.glob("logs/**/*.log"))
    log = logs[-1].read_text()
    assert "GetImage.io gallery of this task: /getimage/gallery/example_getimage_mapped/" in log
    assert log.rindex("GetImage.io gallery of this task") > log.rindex("finished with 4 image(s)")
    # Airflow logs the end of a lazy sequence as an ERROR when a task iterates a mapped task's
    # output: the example's own `gather` does (README Troubleshooting). The provider's tasks do not.
    not_found = [line for line in walkthrough.text().splitlines() if "XCom not found" in line]
    assert len(not_found) <= 1, not_found
    assert all("offset=3 " in line for line in not_found), not_found


def test_the_expected_dags_are_every_example_dag() -> None:
    """The walk-through copies every example DAG file: the set above must follow example_dags/."""
    pattern = re.compile(r'(?:DAG\(|dag_id=|DAG_ID = )\s*"(example_getimage[a-z_]*)"')
    files = (Path(__file__).parent.parent / "example_dags").glob("example_getimage*.py")
    found = {dag_id for path in files for dag_id in pattern.findall(path.read_text())}
    assert found == EXAMPLE_DAG_IDS

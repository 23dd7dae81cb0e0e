"""
The released artifacts: ``python -m build`` gives a wheel and an sdist that ``twine check`` accepts.

The wheel must carry what the README promises an installed provider has: the runtime package, the
emulator (console script and pytest plugin) and the example DAGs, at
``airflow_provider_getimage/example_dags/``. The build runs once per module, as a release would
(isolated, the backend pinned by constraints.txt); where the backend cannot be installed (no
package index), these tests skip and say so.
"""

from __future__ import annotations

import email.parser
import os
import re
import subprocess
import sys
import tarfile
import venv
import zipfile
from configparser import ConfigParser
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from packaging.requirements import Requirement
from packaging.version import Version

from airflow_provider_getimage import __version__

if TYPE_CHECKING:
    from email.message import Message

REPO = Path(__file__).resolve().parents[1]
DIST_NAME = "airflow_provider_getimage"
EXAMPLE_DAGS = sorted(path.name for path in (REPO / "example_dags").glob("*.py"))


@dataclass(frozen=True)
class Built:
    """The two artifacts of one build."""

    wheel: Path
    sdist: Path


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Built:
    """``python -m build`` once: the sdist, then the wheel built from that sdist (about 20 s)."""
    out = tmp_path_factory.mktemp("dist")
    env = dict(os.environ, PIP_CONSTRAINT=str(REPO / "constraints.txt"))
    result = subprocess.run(
        [sys.executable, "-m", "build", "--outdir", str(out), str(REPO)],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        check=False,
    )
    output = result.stdout + result.stderr
    if result.returncode != 0:
        if "build-requirements" in output or "install_dependencies" in output:
            pytest.skip("the build backend (hatchling) could not be installed: no package index reachable?")
        pytest.fail(f"python -m build failed:\n{output[-4000:]}")
    wheels, sdists = list(out.glob("*.whl")), list(out.glob("*.tar.gz"))
    assert len(wheels) == len(sdists) == 1, sorted(p.name for p in out.iterdir())
    return Built(wheel=wheels[0], sdist=sdists[0])


def wheel_names(built: Built) -> set[str]:
    with zipfile.ZipFile(built.wheel) as wheel:
        return set(wheel.namelist())


def wheel_text(built: Built, name: str) -> str:
    with zipfile.ZipFile(built.wheel) as wheel:
        return wheel.read(f"{DIST_NAME}-{__version__}.dist-info/{name}").decode()


def wheel_metadata(built: Built) -> Message:
    return email.parser.Parser().parsestr(wheel_text(built, "METADATA"))


def test_artifacts_are_named_after_the_single_sourced_version(built: Built) -> None:
    assert built.wheel.name == f"{DIST_NAME}-{__version__}-py3-none-any.whl"
    assert built.sdist.name == f"{DIST_NAME}-{__version__}.tar.gz"
    assert wheel_metadata(built)["Version"] == __version__


def test_wheel_holds_the_provider_the_emulator_and_the_example_dags(built: Built) -> None:
    names = wheel_names(built)
    package = {
        f"{DIST_NAME}/{module}.py"
        for module in (
            "__init__",
            "_rules",
            "exceptions",
            "get_provider_info",
            "polling",
            "hooks/getimage",
            "operators/getimage",
            "sensors/getimage",
            "triggers/getimage",
            "links/getimage",
            "emulator/__init__",
            "emulator/__main__",
            "emulator/cli",
            "emulator/state",
            "emulator/app",
            "emulator/runner",
            "emulator/pytest_plugin",
        )
    }
    assert package <= names, sorted(package - names)
    shipped = sorted(
        name.rsplit("/", 1)[1] for name in names if name.startswith(f"{DIST_NAME}/example_dags/")
    )
    assert shipped == EXAMPLE_DAGS, "every example DAG, at the place the README gives"
    with zipfile.ZipFile(built.wheel) as wheel:
        for dag_file in EXAMPLE_DAGS:
            assert (
                wheel.read(f"{DIST_NAME}/example_dags/{dag_file}")
                == (REPO / "example_dags" / dag_file).read_bytes()
            ), f"{dag_file} is shipped as it is in the repository"
    strays = [
        n for n in names if not n.startswith((f"{DIST_NAME}/", f"{DIST_NAME}-{__version__}.dist-info/"))
    ]
    assert strays == [], "nothing outside the package (no tests/, benchmarks/, top-level example_dags/)"
    assert not [n for n in names if "__pycache__" in n or n.endswith(".pyc")]


def test_wheel_metadata_declares_the_supported_airflow_and_the_entry_points(built: Built) -> None:
    metadata = wheel_metadata(built)
    assert metadata["Name"] == "airflow-provider-getimage"
    assert metadata["Requires-Python"] == ">=3.11"
    requires = {
        req.name: req for req in map(Requirement, metadata.get_all("Requires-Dist") or []) if not req.marker
    }
    assert set(requires) == {
        "apache-airflow",
        "apache-airflow-providers-http",
        "apache-airflow-providers-common-compat",
        "requests",
        "aiohttp",
    }
    airflow = requires["apache-airflow"].specifier
    for tested in locked_airflow_versions():
        assert airflow.contains(tested), f"the tested Airflow {tested} is inside {airflow}"
    oldest = min(locked_airflow_versions())
    (lower,) = [spec.version for spec in airflow if spec.operator == ">="]
    assert Version(lower) == Version(f"{oldest.major}.{oldest.minor}"), (
        f"the declared range ({airflow}) starts at the oldest tested minor release ({oldest})"
    )
    assert "Framework :: Apache Airflow :: Provider" in (metadata.get_all("Classifier") or [])
    assert metadata["Description-Content-Type"] == "text/markdown"

    entry_points = ConfigParser()
    entry_points.optionxform = str  # type: ignore[assignment,method-assign]
    entry_points.read_string(wheel_text(built, "entry_points.txt"))
    assert dict(entry_points["apache_airflow_provider"]) == {
        "provider_info": "airflow_provider_getimage.get_provider_info:get_provider_info"
    }
    assert dict(entry_points["console_scripts"]) == {
        "getimage-emulator": "airflow_provider_getimage.emulator.cli:main"
    }
    assert dict(entry_points["pytest11"]) == {
        "getimage_emulator": "airflow_provider_getimage.emulator.pytest_plugin"
    }


def test_sdist_holds_sources_tests_locks_and_changelog(built: Built) -> None:
    root = f"{DIST_NAME}-{__version__}"
    with tarfile.open(built.sdist) as sdist:
        names = set(sdist.getnames())
    expected = {
        "pyproject.toml",
        "README.md",
        "CHANGELOG.md",
        "Makefile",
        "constraints.txt",
        *(f"constraints/{path.name}" for path in (REPO / "constraints").glob("*.txt")),
        *(f"example_dags/{name}" for name in EXAMPLE_DAGS),
        "tests/conftest.py",
        "airflow_provider_getimage/hooks/getimage.py",
    }
    missing = {name for name in expected if f"{root}/{name}" not in names}
    assert not missing, sorted(missing)


def test_twine_check_passes(built: Built) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "twine", "check", "--strict", str(built.wheel), str(built.sdist)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("PASSED") == 2, result.stdout


def test_changelog_names_this_version() -> None:
    changelog = (REPO / "CHANGELOG.md").read_text()
    releases = re.findall(r"^## \[(\d+\.\d+\.\d+)\] - \d{4}-\d{2}-\d{2}$", changelog, flags=re.MULTILINE)
    assert releases, "Keep a Changelog headings: ## [X.Y.Z] - YYYY-MM-DD"
    assert releases[0] == __version__, "the newest release in CHANGELOG.md is the package version"


def test_installed_wheel_imports_and_carries_the_example_dags(built: Built, tmp_path: Path) -> None:
    """
    Install the wheel alone into a fresh venv that borrows this one's dependencies, then use it.

    The new venv's own site-packages comes first, so the provider is the installed wheel, not this
    repository's editable install; Airflow and the other dependencies come from this venv (its path,
    without its .pth files, so the editable install's path does not come along).
    """
    target = tmp_path / "venv"
    venv.EnvBuilder(with_pip=False).create(target)
    python = target / "bin" / "python"
    site_packages = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    borrowed = subprocess.run(
        [sys.executable, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    Path(site_packages, "borrowed_dependencies.pth").write_text(borrowed + "\n")
    install = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "--python",
            str(python),
            "install",
            "--quiet",
            "--no-deps",
            "--no-index",
            str(built.wheel),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert install.returncode == 0, install.stdout + install.stderr
    assert (target / "bin" / "getimage-emulator").exists(), "the console script is installed"

    check = f"""
import importlib, importlib.metadata, pathlib, sys
import airflow_provider_getimage as package
root = pathlib.Path(package.__file__).parent
assert root == pathlib.Path({site_packages!r}) / "airflow_provider_getimage", root
assert importlib.metadata.version("airflow-provider-getimage") == {__version__!r}
for module in ("hooks", "operators", "sensors", "triggers", "links"):
    importlib.import_module(f"airflow_provider_getimage.{{module}}.getimage")
dags = sorted(p.name for p in (root / "example_dags").glob("*.py"))
assert dags == {EXAMPLE_DAGS!r}, dags
example = importlib.import_module("airflow_provider_getimage.example_dags.example_getimage")
assert pathlib.Path(example.__file__).parent == root / "example_dags"
assert not [m for m in sys.modules if m.startswith("airflow_provider_getimage.emulator")]
print("ok", root)
"""
    result = subprocess.run(
        [str(python), "-c", check], capture_output=True, text=True, timeout=120, check=False, cwd=tmp_path
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.splitlines()[-1].startswith("ok "), result.stdout  # Airflow may log first


def locked_airflow_versions() -> list[Version]:
    """The Airflow of each lock file CI tests (constraints.txt and constraints/airflow-*.txt)."""
    locks = [REPO / "constraints.txt", *sorted((REPO / "constraints").glob("airflow-*.txt"))]
    versions = []
    for lock in locks:
        (pin,) = re.findall(r"^apache-airflow==(\S+)$", lock.read_text(), flags=re.MULTILINE)
        versions.append(Version(pin))
    return versions

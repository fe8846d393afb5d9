"""The distribution: what an sdist, and the wheel built from it, hold.

The build runs setuptools' PEP 517 hooks directly (the dev extra has the backend), offline,
on a copy of the files the build needs, so that nothing stale in the checkout's build/
can slip into the wheel. The copy holds the development tools (ometria_dev/) as well, as a
checkout does, to prove that the configuration, not the copy, keeps them out. scripts/
test-wheel goes further: it installs a wheel into a fresh virtualenv and runs the commands
from outside the checkout.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tarfile
import tomllib
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
#: What the build reads: the Dockerfile copies the same into its build stage.
BUILD_INPUTS = ("pyproject.toml", "README.md", "worker", "schemas")
#: Beside them in a checkout, and in no distribution: the demo and the Ometria stand-in.
DEV_TOOLS = "ometria_dev"
BUILTIN_PREFIX = "worker/builtin_schemas/"
_HOOK = "import sys; from setuptools import build_meta; print(build_meta.{}(sys.argv[1]))"


def _build(hook: str, source: Path, out: Path) -> Path:
    done = subprocess.run(
        [sys.executable, "-c", _HOOK.format(hook), str(out)],
        cwd=source,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return out / done.stdout.strip().splitlines()[-1]


def _files(root: Path) -> list[Path]:
    """Every file under ``root`` but byte-code and hidden entries, as git would have them."""
    return sorted(
        path
        for path in root.rglob("*")
        if path.is_file()
        and "__pycache__" not in path.parts
        and not any(part.startswith(".") for part in path.relative_to(root).parts)
    )


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    """The wheel built from the sdist built from the checkout: member name → content."""
    work = tmp_path_factory.mktemp("dist")
    source = work / "source"
    source.mkdir()
    for name in (*BUILD_INPUTS, DEV_TOOLS):
        if (REPO / name).is_dir():
            shutil.copytree(
                REPO / name, source / name, ignore=shutil.ignore_patterns("__pycache__")
            )
        else:
            shutil.copy2(REPO / name, source / name)
    sdist = _build("build_sdist", source, work / "out")
    with tarfile.open(sdist) as archive:
        if hasattr(tarfile, "data_filter"):  # 3.11.4+; 3.12+ warns without a filter
            archive.extractall(work / "unpacked", filter="data")
        else:  # our own sdist, just built: nothing to filter
            archive.extractall(work / "unpacked")
    (unpacked,) = (work / "unpacked").iterdir()
    built = _build("build_wheel", unpacked, work / "out")
    with zipfile.ZipFile(built) as archive:
        return {name: archive.read(name) for name in archive.namelist()}


def test_wheel_holds_every_file_of_schemas(wheel: dict[str, bytes]) -> None:
    schemas = REPO / "schemas"
    wanted = {
        BUILTIN_PREFIX + path.relative_to(schemas).as_posix(): path.read_bytes()
        for path in _files(schemas)
    }
    shipped = {name: data for name, data in wheel.items() if name.startswith(BUILTIN_PREFIX)}
    assert len(wanted) >= 10  # every built-in type, and MODEL 2 of the basket events
    assert shipped == wanted


def test_wheel_holds_every_module_of_worker(wheel: dict[str, bytes]) -> None:
    wanted = {path.relative_to(REPO).as_posix() for path in _files(REPO / "worker")}
    shipped = {
        name for name in wheel if name.startswith("worker/") and not name.startswith(BUILTIN_PREFIX)
    }
    assert "worker/py.typed" in wanted
    assert shipped == wanted


def test_wheel_holds_no_development_tool(wheel: dict[str, bytes]) -> None:
    # Only worker/ and the metadata: no ometria_dev/, and nothing of the demo or the
    # stand-in left under worker/ either (the image installs this very configuration).
    tops = {name.split("/", 1)[0] for name in wheel}
    (metadata,) = tops - {"worker"}
    assert metadata.endswith(".dist-info")
    assert (REPO / DEV_TOOLS / "stub" / "server.py").is_file()  # the copy had them
    modules = [name for name in wheel if name.endswith(".py")]
    assert not [name for name in modules if "demo" in name or "stub" in name]
    # The runtime names them only in the CLI's command table, to say where to get them.
    assert [name for name in modules if DEV_TOOLS.encode() in wheel[name]] == ["worker/cli.py"]


def test_wheel_has_the_console_script(wheel: dict[str, bytes]) -> None:
    (entry_points,) = (data for name, data in wheel.items() if name.endswith("/entry_points.txt"))
    assert "ometria-worker = worker.cli:main" in entry_points.decode().splitlines()


def test_pyproject_lists_every_package() -> None:
    # The packages are listed, not found (the built-in schemas live outside worker/): a new
    # subpackage must be added to the list, or the wheel would lack it.
    setuptools = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    found = {
        ".".join(init.parent.relative_to(REPO).parts)
        for init in (REPO / "worker").rglob("__init__.py")
    }
    assert set(setuptools["packages"]) == found | {"worker.builtin_schemas"}
    assert setuptools["package-dir"] == {"worker.builtin_schemas": "schemas"}

"""The command table: ``--help`` stays light, and the development tools (``demo``,
``stub``, in ``ometria_dev``) work where they can be imported and say where to get them
where they cannot.

"Cannot" is made two ways: in-process by replacing :func:`worker.cli.dev_tools`, and for
real in a child that runs a copy of ``worker/`` with no ``ometria_dev/`` beside it, as an
installed wheel has it (scripts/test-wheel and scripts/test-image-install check the wheel
itself).
"""

from __future__ import annotations

import gc
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from worker import cli

REPO = Path(__file__).resolve().parents[2]
DEV_COMMANDS = ("demo", "stub")
MARK = "(development tool, not installed)"
#: What `--help` and `run --help` must not import: the dependencies and the event loop.
HEAVY = (
    "asyncio",
    "ssl",
    "confluent_kafka",
    "orjson",
    "httpx",
    "httpx_aiohttp",
    "aiohttp",
    "structlog",
    "yaml",
    "re2",
    "fastavro",
    "worker.config",
    "worker.schemas",
    "worker.app",
)
_IMPORTED_BY = """
import sys
from worker import cli
try:
    cli.main(sys.argv[1:])
except SystemExit:
    pass
print(" ".join(sorted(sys.modules)), file=sys.stderr)
"""


def _run(
    args: list[str], cwd: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        args, cwd=cwd, env=env, capture_output=True, text=True, timeout=60, check=False
    )


def _imports(cwd: Path, env: dict[str, str]) -> tuple[str, bool]:
    """Where a child started here imports worker from, and whether ometria_dev is on its path."""
    probe = "import importlib.util as u, worker; print(worker.__file__, u.find_spec('ometria_dev'))"
    done = _run([sys.executable, "-c", probe], cwd=cwd, env=env)
    assert done.returncode == 0, done.stderr
    where, spec = done.stdout.split(maxsplit=1)
    return where, spec.strip() != "None"


def _one_line(err: str) -> str:
    lines = err.splitlines()
    assert len(lines) == 1, err
    return lines[0]


def test_every_command_has_a_module_with_configure_and_run() -> None:
    assert [c.name for c in cli.COMMANDS] == [
        "run",
        "demo",
        "check",
        "map",
        "schemas",
        "dlq",
        "query",
        "stub",
    ]
    assert [c.name for c in cli.COMMANDS if c.dev] == list(DEV_COMMANDS)
    for command in cli.COMMANDS:
        parser = cli.build_parser(command.name)
        with pytest.raises(SystemExit) as exit_:
            parser.parse_args([command.name, "--help"])
        assert exit_.value.code == 0


@pytest.mark.parametrize("argv", [["--help"], ["run", "--help"]])
def test_help_imports_no_dependency(argv: list[str]) -> None:
    done = _run([sys.executable, "-c", _IMPORTED_BY, *argv], cwd=REPO)
    assert done.returncode == 0, done.stderr
    imported = set(done.stderr.split())
    assert "worker.cli" in imported
    assert not imported & set(HEAVY)
    # Only the chosen subcommand's module: none for the listing, run's for `run --help`.
    commands = {name for name in imported if name.startswith(("worker.commands.", "ometria_dev."))}
    assert commands == ({"worker.commands.run"} if argv[0] == "run" else set())


def test_with_the_dev_tools_help_lists_them_unmarked(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.dev_tools()
    with pytest.raises(SystemExit) as exit_:
        cli.main(["--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    assert MARK not in out
    for command in cli.COMMANDS:
        assert f"    {command.name} " in out


@pytest.fixture
def without_dev_tools(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cli, "dev_tools", lambda: False)


@pytest.mark.usefixtures("without_dev_tools")
@pytest.mark.parametrize(
    "argv",
    [
        ["demo"],
        ["demo", "--events", "5", "--keep"],
        ["demo", "--help"],
        ["stub", "--port", "0"],
        ["stub", "--bogus"],
        ["--", "stub"],
    ],
)
def test_without_the_dev_tools_they_say_where_to_get_them(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(argv) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    name = next(arg for arg in argv if not arg.startswith("-"))
    assert _one_line(captured.err) == f"ometria-worker {name}: {cli.DEV_TOOL_MISSING}"
    assert "pip install -e '.[dev]'" in cli.DEV_TOOL_MISSING


@pytest.mark.usefixtures("without_dev_tools")
def test_without_the_dev_tools_help_marks_them(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        cli.main(["--help"])
    assert exit_.value.code == 0
    lines = capsys.readouterr().out.splitlines()
    marked = {line.split()[0] for line in lines if MARK in line}
    assert marked == set(DEV_COMMANDS)
    for command in cli.COMMANDS:
        assert any(line.startswith(f"    {command.name} ") for line in lines)


@pytest.mark.usefixtures("without_dev_tools")
def test_without_the_dev_tools_the_other_commands_work(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit) as exit_:
        cli.main(["run", "--help"])
    assert exit_.value.code == 0
    assert "ometria-worker run" in capsys.readouterr().out
    assert cli.main(["schemas"]) == 0


@pytest.fixture
def lone_worker(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    """A copy of worker/ with nothing beside it, and an environment that imports it."""
    shutil.copytree(
        REPO / "worker", tmp_path / "worker", ignore=shutil.ignore_patterns("__pycache__")
    )
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    where, dev_on_path = _imports(tmp_path, env)
    if dev_on_path:
        pytest.skip("ometria_dev is on every path here (an editable install in compat mode?)")
    assert where == str(tmp_path / "worker" / "__init__.py")
    return tmp_path, env


def test_a_worker_without_the_dev_tools_beside_it_says_where_to_get_them(
    lone_worker: tuple[Path, dict[str, str]],
) -> None:
    where, env = lone_worker
    for name in DEV_COMMANDS:
        done = _run([sys.executable, "-m", "worker", name, "--help"], cwd=where, env=env)
        assert done.returncode == 2
        assert done.stdout == ""
        assert _one_line(done.stderr) == f"ometria-worker {name}: {cli.DEV_TOOL_MISSING}"
    listing = _run([sys.executable, "-m", "worker", "--help"], cwd=where, env=env)
    assert listing.returncode == 0, listing.stderr
    assert {line.split()[0] for line in listing.stdout.splitlines() if MARK in line} == set(
        DEV_COMMANDS
    )
    version = _run([sys.executable, "-m", "worker", "--version"], cwd=where, env=env)
    assert version.stdout.startswith("ometria-worker ")


def test_an_editable_install_finds_them_beside_worker(tmp_path: Path) -> None:
    # The console script, from a directory that is not the checkout and with no PYTHONPATH:
    # only the editable install's finder maps worker/ here, and it maps no ometria_dev.
    script = Path(sys.executable).with_name("ometria-worker")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    where, dev_on_path = _imports(tmp_path, env)
    if not script.exists() or where != str(REPO / "worker" / "__init__.py") or dev_on_path:
        pytest.skip("this checkout is not installed editable (setuptools' default mode) here")
    done = _run([str(script), "stub", "--help"], cwd=tmp_path, env=env)
    assert done.returncode == 0, done.stderr
    assert "--latency-per-in-flight-ms" in done.stdout
    done = _run([str(script), "--help"], cwd=tmp_path, env=env)
    assert MARK not in done.stdout


def test_run_keeps_what_start_up_made_out_of_the_collector_while_it_runs() -> None:
    from worker.commands.run import startup_frozen  # noqa: PLC0415 - as `run` imports it

    assert gc.get_freeze_count() == 0
    with startup_frozen():
        assert gc.get_freeze_count() > 0  # modules, settings, schemas: never walked again
    assert gc.get_freeze_count() == 0  # an in-process caller goes on with a normal collector

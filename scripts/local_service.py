"""What ``scripts/kafka-local`` and ``scripts/schema-registry-local`` share.

Both run a throwaway JVM service on 127.0.0.1 for tests, CI and the demo, from artifacts
fetched once from Maven Central, pinned by sha256 in a lock file, and cached under
``~/.cache/ometria-worker``. This module holds the parts that do not depend on the
service: settings from the command line and the environment, finding Java, the lock
file, fetching (Maven, or plain downloads from a Maven-2 repository), the verified cache,
pid files and the process checks, waiting for readiness, stopping, the ``--owner-pid``
watcher, and the ``start``/``stop``/``status`` commands built from them.

A service is described by a :class:`Service` (its names, defaults and environment
prefix) and drives the generic commands through a few callables: how to launch it,
whether it answers, and how to recognise its process. The standard library is enough.

Failures are a :class:`LocalError`: one line on stderr and an exit code, 1 for an error,
3 for "not running" (``status``), 4 for "the port is taken by something else" (callers
may retry elsewhere).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final
from xml.sax.saxutils import escape

HOST: Final = "127.0.0.1"
MIN_JAVA: Final = 17
REPO_ROOT: Final = Path(__file__).resolve().parent.parent
DEFAULT_STATE_ROOT: Final = REPO_ROOT / "var"

EXIT_ERROR: Final = 1
EXIT_NOT_RUNNING: Final = 3
EXIT_PORT_TAKEN: Final = 4


class LocalError(Exception):
    """A failure reported to the user as one line; ``exit_code`` is the process exit code."""

    def __init__(self, message: str, exit_code: int = EXIT_ERROR) -> None:
        super().__init__(message)
        self.exit_code = exit_code


@dataclass(frozen=True, slots=True)
class Service:
    """The names and defaults of one local service.

    ``env_prefix`` names its settings: ``<prefix>_PORT``, ``_CACHE_DIR``, ``_STATE_ROOT``,
    ``_MAVEN_REPO``, ``_JAVA_OPTS``, ``_START_TIMEOUT`` and ``_STOP_TIMEOUT``.
    """

    prog: str  # the command name, prefix of every message: "kafka-local"
    noun: str  # what runs, in messages: "broker"
    env_prefix: str  # "KAFKA_LOCAL"
    default_port: int
    cache_name: str  # its directory under ~/.cache/ometria-worker
    state_name: str  # its state is <state root>/<state_name>-<port>
    default_java_opts: str
    default_start_timeout: float
    default_stop_timeout: float
    # A -D option with the state dir as value marks the JVM as ours (see our_pid).
    state_marker: str
    pid_file: str  # its name in the state dir

    def log(self, message: str) -> None:
        """Progress goes to stderr so stdout carries only the answer (an address)."""
        print(f"{self.prog}: {message}", file=sys.stderr, flush=True)


@dataclass(frozen=True, slots=True)
class Settings:
    """Everything a command needs, read once from the command line and the environment."""

    service: Service
    port: int
    state_root: Path
    cache_dir: Path
    maven_repo: str | None
    java_opts: tuple[str, ...]
    start_timeout: float
    stop_timeout: float

    @property
    def state_dir(self) -> Path:
        """This port's instance: its config, data, logs and pid file, removed by ``stop``."""
        return self.state_root / f"{self.service.state_name}-{self.port}"

    @property
    def pid_path(self) -> Path:
        """The file holding the pid of the JVM started for this state dir."""
        return self.state_dir / self.service.pid_file

    @property
    def log_dir(self) -> Path:
        """Where the instance logs (inside the state dir)."""
        return self.state_dir / "logs"


def one_line(text: str, limit: int = 300) -> str:
    """``text`` on one line, cut to ``limit`` characters."""
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def _float_env(name: str, default: float) -> float:
    raw = os.environ.get(name)
    if not raw:
        return default
    try:
        return float(raw)
    except ValueError:
        raise LocalError(f"{name} must be a number of seconds, got {raw!r}") from None


def load_settings(service: Service, port: int | None) -> Settings:
    """Resolve the settings: ``--port`` wins over ``<prefix>_PORT`` over the default."""
    prefix = service.env_prefix
    if port is None:
        raw = os.environ.get(f"{prefix}_PORT") or str(service.default_port)
        try:
            port = int(raw)
        except ValueError:
            raise LocalError(f"{prefix}_PORT must be a port number, got {raw!r}") from None
    if not 0 < port < 65536:
        raise LocalError(f"port must be between 1 and 65535, got {port}")
    cache_base = os.environ.get(f"{prefix}_CACHE_DIR")
    if cache_base:
        cache_dir = Path(cache_base).expanduser()
    else:
        xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
        cache_dir = Path(xdg) / "ometria-worker" / service.cache_name
    state_root = Path(os.environ.get(f"{prefix}_STATE_ROOT") or DEFAULT_STATE_ROOT).expanduser()
    java_opts = os.environ.get(f"{prefix}_JAVA_OPTS", service.default_java_opts)
    return Settings(
        service=service,
        port=port,
        state_root=state_root.absolute(),
        cache_dir=cache_dir.absolute(),
        maven_repo=os.environ.get(f"{prefix}_MAVEN_REPO") or None,
        java_opts=tuple(shlex.split(java_opts)),
        start_timeout=_float_env(f"{prefix}_START_TIMEOUT", service.default_start_timeout),
        stop_timeout=_float_env(f"{prefix}_STOP_TIMEOUT", service.default_stop_timeout),
    )


# --- Java ---------------------------------------------------------------------------------


def java_major_version(version_output: str) -> int | None:
    """The major version in ``java -version`` output (``"1.8.0_392"`` → 8, ``"17.0.15"`` → 17)."""
    match = re.search(r'version "(\d+)(?:\.(\d+))?', version_output)
    if match is None:
        return None
    first = int(match.group(1))
    if first == 1 and match.group(2) is not None:
        return int(match.group(2))
    return first


def find_java(minimum: int = MIN_JAVA) -> Path:
    """The ``java`` of ``JAVA_HOME``, else of ``PATH``; ``minimum`` or newer, or an error."""
    java_home = os.environ.get("JAVA_HOME")
    candidate: str | None = None
    if java_home and (Path(java_home) / "bin" / "java").is_file():
        candidate = str(Path(java_home) / "bin" / "java")
    else:
        candidate = shutil.which("java")
    if candidate is None:
        raise LocalError(
            f"Java {minimum} or newer is required: no java on PATH and JAVA_HOME is not set"
        )
    try:
        probe = subprocess.run(
            [candidate, "-version"], capture_output=True, text=True, timeout=30, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise LocalError(f"cannot run {candidate} -version: {exc}") from None
    major = java_major_version(probe.stderr + probe.stdout)
    if major is None or major < minimum:
        found = "an unknown version" if major is None else f"Java {major}"
        raise LocalError(
            f"Java {minimum} or newer is required, found {found} at {candidate} "
            f"(set JAVA_HOME to a JDK {minimum}+)"
        )
    return Path(candidate)


# --- Lock files and the verified cache ----------------------------------------------------


@dataclass(frozen=True, slots=True)
class LockEntry:
    """One pinned file: its sha256 and its path (in a Maven-2 repository, or a bundle)."""

    sha256: str
    path: str

    @property
    def file_name(self) -> str:
        """The last component of the path."""
        return self.path.rsplit("/", 1)[-1]


def read_lock(path: Path) -> list[LockEntry]:
    """Parse a lock file: ``<sha256>  <path>`` per line, ``#`` comments and blank lines."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise LocalError(f"cannot read {path}: {exc.strerror}") from None
    entries: list[LockEntry] = []
    for number, line in enumerate(lines, start=1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        parts = stripped.split()
        if len(parts) != 2 or not re.fullmatch(r"[0-9a-f]{64}", parts[0]):
            raise LocalError(f"{path}:{number}: expected '<sha256>  <path>'")
        entries.append(LockEntry(sha256=parts[0], path=parts[1]))
    return entries


def sha256_file(path: Path) -> str:
    """The hex sha256 of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def verify_files(directory: Path, expected: dict[str, str], lock_name: str) -> None:
    """Check that ``directory`` holds exactly ``expected`` (relative path → sha256)."""
    present = {p.relative_to(directory).as_posix() for p in directory.rglob("*") if not p.is_dir()}
    if present != set(expected):
        missing = sorted(set(expected) - present)
        extra = sorted(present - set(expected))
        raise LocalError(
            f"files in {directory} differ from {lock_name}: "
            f"missing {missing or 'none'}, unexpected {extra or 'none'}"
        )
    for relative, sha256 in expected.items():
        actual = sha256_file(directory / relative)
        if actual != sha256:
            raise LocalError(f"sha256 mismatch for {relative}: expected {sha256}, got {actual}")


def ensure_cached(
    service: Service,
    target: Path,
    verify: Callable[[Path], None],
    fill: Callable[[Path, Path], None],
) -> Path:
    """The verified directory ``target``, filled on first use and reused after.

    ``verify(directory)`` raises :class:`LocalError` unless the directory holds exactly
    the pinned files. ``fill(staged, work)`` puts them in ``staged``, using ``work`` for
    scratch. The fill happens beside the final place and is renamed into it only once
    verified, so a half-done fetch is never mistaken for a cache, and two concurrent first
    starts cannot interleave files.
    """
    if target.is_dir():
        try:
            verify(target)
        except LocalError as exc:
            service.log(f"cached files rejected ({exc}); fetching again")
            shutil.rmtree(target)
        else:
            return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".fetch-", dir=target.parent) as tmp:
        work = Path(tmp)
        staged = work / "staged"
        staged.mkdir()
        fill(staged, work)
        verify(staged)
        try:
            staged.rename(target)
        except OSError:
            if not target.is_dir():
                raise
            # Another start won the race with the same verified bytes; keep theirs.
    return target


# --- Fetching from Maven ------------------------------------------------------------------

# Pinned so resolution does not depend on the Maven release's default plugin version.
DEPENDENCY_PLUGIN_VERSION: Final = "3.8.1"


def generated_pom(artifact_id: str, maven_repo: str | None, coordinates: Sequence[str]) -> str:
    """A throwaway pom declaring ``coordinates`` (``group:artifact:version``) and the mirror.

    With ``maven_repo``, declaring the repository id "central" replaces Maven's built-in
    default repository, for both artifacts and plugins.
    """
    dependencies = "\n".join(
        "    <dependency><groupId>{}</groupId><artifactId>{}</artifactId>"
        "<version>{}</version></dependency>".format(*c.split(":"))
        for c in coordinates
    )
    repositories = ""
    if maven_repo:
        url = escape(maven_repo)
        repositories = (
            f"  <repositories><repository><id>central</id><url>{url}</url>"
            "</repository></repositories>\n"
            f"  <pluginRepositories><pluginRepository><id>central</id><url>{url}</url>"
            "</pluginRepository></pluginRepositories>\n"
        )
    return f"""<?xml version="1.0" encoding="UTF-8"?>
<project>
  <modelVersion>4.0.0</modelVersion>
  <groupId>local.ometria-worker</groupId>
  <artifactId>{artifact_id}</artifactId>
  <version>0</version>
  <packaging>pom</packaging>
{repositories}  <dependencies>
{dependencies}
  </dependencies>
</project>
"""


def run_mvn(mvn: str, args: Sequence[str], cwd: Path, what: str) -> None:
    """Run ``mvn -B -q`` with ``args``; a failure raises with Maven's first [ERROR] line."""
    command = [mvn, "-B", "-q", "-Dstyle.color=never", *args]
    try:
        result = subprocess.run(
            command, capture_output=True, text=True, timeout=900, check=False, cwd=cwd
        )
    except subprocess.TimeoutExpired:
        raise LocalError(f"mvn did not finish fetching {what} within 900 s") from None
    if result.returncode != 0:
        # Maven colours some lines even in batch mode; drop the escapes before matching.
        plain = re.sub(r"\x1b\[[0-9;]*m", "", result.stdout + "\n" + result.stderr)
        output = [line.strip() for line in plain.splitlines() if line.strip()]
        errors = [line[7:] for line in output if line.startswith("[ERROR]") and line[7:].strip()]
        detail = errors[0] if errors else (output[-1] if output else "no output")
        detail = detail.removesuffix("-> [Help 1]")
        raise LocalError(f"mvn could not fetch {what}: {one_line(detail)}")


def dependency_plugin(goal: str) -> str:
    """The fully qualified maven-dependency-plugin goal, at the pinned version."""
    return f"org.apache.maven.plugins:maven-dependency-plugin:{DEPENDENCY_PLUGIN_VERSION}:{goal}"


def download(
    service: Service,
    base_url: str,
    entries: Sequence[LockEntry],
    dest: Path,
    source: str,
    *,
    check: bool = True,
) -> None:
    """Fetch each entry from a Maven-2 repository base URL into ``dest``, checking its sha256.

    ``source`` names where the URL came from, for messages. ``check=False`` is for
    maintainers' ``lock`` commands, which learn the sha256 from the download.
    """
    base = base_url.rstrip("/")
    service.log(f"fetching {len(entries)} file(s) from {source}")
    for entry in entries:
        url = f"{base}/{entry.path}"
        target = dest / entry.file_name
        digest = hashlib.sha256()
        try:
            with urllib.request.urlopen(url, timeout=60) as response, target.open("wb") as out:
                for chunk in iter(lambda: response.read(1 << 16), b""):
                    digest.update(chunk)
                    out.write(chunk)
        except (urllib.error.URLError, OSError, ValueError) as exc:
            reason = getattr(exc, "reason", None) or exc
            raise LocalError(
                f"download of {entry.file_name} failed: {one_line(str(reason))}"
            ) from None
        if check and digest.hexdigest() != entry.sha256:
            raise LocalError(f"sha256 mismatch for {entry.file_name} downloaded from {base}")


# --- Ports and processes ------------------------------------------------------------------


def port_is_free(port: int) -> bool:
    """Whether a JVM could bind ``127.0.0.1:port`` (SO_REUSEADDR, as the JVM sets it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((HOST, port))
        except OSError:
            return False
        return True


def free_port() -> int:
    """A port the kernel says is free now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def read_pid(pid_path: Path) -> int | None:
    """The pid recorded in ``pid_path``, if any."""
    try:
        return int(pid_path.read_text(encoding="ascii").strip())
    except (OSError, ValueError):
        return None


def process_args(pid: int) -> list[str] | None:
    """The command line of ``pid``, or None when it is gone or unreadable."""
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except FileNotFoundError:
        if Path("/proc/self").exists():
            return None
    except OSError:
        return None
    else:
        return [arg.decode(errors="replace") for arg in raw.split(b"\0") if arg]
    # No /proc (macOS): ps prints the command line, split on spaces; enough for our marker.
    result = subprocess.run(
        ["ps", "-o", "args=", "-p", str(pid)], capture_output=True, text=True, check=False
    )
    return result.stdout.split() if result.returncode == 0 and result.stdout.strip() else None


def is_alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie counts as gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text(encoding="ascii", errors="replace")
    except FileNotFoundError:
        if Path("/proc/self").exists():
            return False
    except OSError:
        pass
    else:
        # An exited process not yet reaped by its new parent is a zombie: already gone.
        return stat.rsplit(")", 1)[-1].split()[0] != "Z"
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def our_pid(settings: Settings, main_marker: str) -> int | None:
    """The recorded pid if it is still the JVM we started for this state dir.

    Ours means: its command line has the state marker with this state dir, and
    ``main_marker`` (the main class or jar), so a recycled pid is never taken for ours.
    """
    state = settings.state_dir
    pid = read_pid(settings.pid_path)
    if pid is None or not is_alive(pid):
        return None
    args = process_args(pid)
    if args is None:
        return None
    marker = f"{settings.service.state_marker}{state}"
    if marker in args and any(main_marker in arg for arg in args):
        return pid
    return None


def last_error_line(*logs: Path) -> str | None:
    """The last line that looks like an error in the first log that has one."""
    for log in logs:
        try:
            lines = log.read_text(encoding="utf-8", errors="replace").splitlines()
        except OSError:
            continue
        for line in reversed(lines):
            if " ERROR " in line or line.startswith(("Error", "Exception")):
                return one_line(line, 240)
    return None


def terminate(pid: int, timeout: float, noun: str) -> bool:
    """SIGTERM (both JVMs shut down cleanly on it), then SIGKILL the group after ``timeout``.

    True when it stopped on SIGTERM, False when it had to be killed.
    """
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not is_alive(pid):
            return True
        time.sleep(0.05)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        if not is_alive(pid):
            return False
        time.sleep(0.05)
    raise LocalError(f"{noun} pid {pid} survived SIGKILL")


# --- Commands -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Runner:
    """How the generic commands drive one service.

    - ``launch(settings, java)``: everything after the checks (the cache, config, the
      JVM started with :func:`spawn_jvm`); returns the process.
    - ``answers(settings)``: True once the service serves requests.
    - ``address(settings)``: what ``start`` prints (the last stdout line).
    - ``main_marker``: a string in the JVM's command line (see :func:`our_pid`).
    - ``logs(settings)``: the log files to quote when start-up fails, main log first.
    - ``script``: the file to run as ``watch`` for ``--owner-pid``.
    - ``relaunch(settings, java)``: start the service again over the state a killed
      instance left (its config and data); None when the service keeps no data worth
      keeping.
    """

    launch: Callable[[Settings, Path], subprocess.Popen[bytes]]
    answers: Callable[[Settings], bool]
    address: Callable[[Settings], str]
    main_marker: str
    logs: Callable[[Settings], tuple[Path, ...]]
    script: Path
    relaunch: Callable[[Settings, Path], subprocess.Popen[bytes]] | None = None


def spawn_jvm(settings: Settings, command: Sequence[str], cwd: Path) -> subprocess.Popen[bytes]:
    """Start ``command`` detached, its output in ``logs/stdout.log``, and record its pid."""
    settings.log_dir.mkdir(parents=True, exist_ok=True)
    # Appended: a restart over kept state keeps the console output of the killed instance.
    with (settings.log_dir / "stdout.log").open("ab") as console:
        # Its own session: the service outlives this command and a terminal's Ctrl-C.
        process = subprocess.Popen(
            list(command),
            stdin=subprocess.DEVNULL,
            stdout=console,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            cwd=cwd,
        )
    settings.pid_path.write_text(f"{process.pid}\n", encoding="ascii")
    return process


def fresh_state_dir(settings: Settings) -> Path:
    """An empty state dir (one left by an instance that died or was killed is removed)."""
    state = settings.state_dir
    if state.exists():
        shutil.rmtree(state)
    state.mkdir(parents=True)
    return state


def cmd_start(
    settings: Settings, runner: Runner, owner_pid: int | None = None, *, keep_data: bool = False
) -> int:
    """Start the service (or find it running) and print its address.

    With ``owner_pid``, a small watcher stops the service once that process is gone, so a
    test run killed before its teardown (a timeout, a crash) leaves nothing behind. With
    ``keep_data``, start over the state a killed instance left (see :func:`cmd_kill`)
    instead of a fresh one.
    """
    service = settings.service
    pid = our_pid(settings, runner.main_marker)
    if pid is not None:
        wait_until_ready(settings, runner, pid, process=None)
        print(runner.address(settings))
        return 0
    if keep_data and runner.relaunch is None:
        raise LocalError(f"the {service.noun} keeps no data to start over")
    if keep_data and not settings.state_dir.is_dir():
        raise LocalError(f"no kept state in {settings.state_dir} to start over (see kill)")
    java = find_java()
    if not port_is_free(settings.port):
        raise LocalError(
            f"port {settings.port} on {HOST} is already in use by another process "
            f"(choose another with --port or {service.env_prefix}_PORT)",
            EXIT_PORT_TAKEN,
        )
    if keep_data:
        assert runner.relaunch is not None
        process = runner.relaunch(settings, java)
    else:
        process = runner.launch(settings, java)
    try:
        wait_until_ready(settings, runner, process.pid, process)
    except KeyboardInterrupt:
        # The JVM ignores the terminal's Ctrl-C (own session): take it down with us.
        terminate(process.pid, settings.stop_timeout, service.noun)
        raise
    if owner_pid is not None:
        _spawn_watcher(settings, runner, owner_pid)
    print(runner.address(settings))
    return 0


def _spawn_watcher(settings: Settings, runner: Runner, owner_pid: int) -> None:
    subprocess.Popen(
        [sys.executable, str(runner.script), "watch", "--port", str(settings.port),
         "--owner-pid", str(owner_pid)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )  # fmt: skip


def cmd_watch(settings: Settings, runner: Runner, owner_pid: int) -> int:
    """Stop this port's instance when ``owner_pid`` exits; return when it is gone."""
    while our_pid(settings, runner.main_marker) is not None:
        if not is_alive(owner_pid):
            stop_one(settings, runner)
            break
        time.sleep(1.0)
    return 0


def wait_until_ready(
    settings: Settings, runner: Runner, pid: int, process: subprocess.Popen[bytes] | None
) -> None:
    """Return once the service answers; raise when it exits or the start timeout passes."""
    noun = settings.service.noun
    deadline = time.monotonic() + settings.start_timeout
    logs = runner.logs(settings)
    while time.monotonic() < deadline:
        exited = process.poll() if process is not None else (None if is_alive(pid) else -1)
        if exited is not None:
            detail = last_error_line(*logs) or f"exit status {exited}"
            raise LocalError(f"the {noun} exited during start-up: {detail} (see {logs[0]})")
        if runner.answers(settings):
            return
        time.sleep(0.1)
    terminate(pid, settings.stop_timeout, noun)
    raise LocalError(
        f"the {noun} did not answer on {runner.address(settings)} within "
        f"{settings.start_timeout:.0f} s (see {logs[0]})"
    )


def stop_one(settings: Settings, runner: Runner) -> None:
    """Stop our instance on this port (if any) and remove its state dir."""
    service, state = settings.service, settings.state_dir
    pid = our_pid(settings, runner.main_marker)
    if pid is None:
        if read_pid(settings.pid_path) is not None:
            service.log(f"pid in {state} is no longer our {service.noun}; removing stale state")
        else:
            service.log(f"no {service.noun} of ours on port {settings.port}")
    else:
        service.log(f"stopping {service.noun} pid {pid} on {runner.address(settings)}")
        if not terminate(pid, settings.stop_timeout, service.noun):
            service.log(f"pid {pid} ignored SIGTERM for {settings.stop_timeout:.0f} s; killed it")
    # The --owner-pid watcher may be removing the same tree at the same moment.
    with contextlib.suppress(FileNotFoundError):
        shutil.rmtree(state)
    # Leave no empty var/ behind, but never remove a directory the user chose.
    if settings.state_root == DEFAULT_STATE_ROOT:
        with contextlib.suppress(OSError):
            settings.state_root.rmdir()


def cmd_kill(settings: Settings, runner: Runner) -> int:
    """SIGKILL our instance on this port at once (a crash) and keep its state dir.

    ``start --keep-data`` then starts it again over the same config and data. Exits 3
    when none of ours runs on the port.
    """
    service = settings.service
    pid = our_pid(settings, runner.main_marker)
    if pid is None:
        raise LocalError(f"no {service.noun} of ours on port {settings.port}", EXIT_NOT_RUNNING)
    service.log(f"killing {service.noun} pid {pid} on {runner.address(settings)} (state kept)")
    # The JVM leads its own session (spawn_jvm), so its group is exactly what it started.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while is_alive(pid):
        if time.monotonic() > deadline:
            raise LocalError(f"{service.noun} pid {pid} survived SIGKILL")
        time.sleep(0.05)
    return 0


def cmd_stop(settings: Settings, runner: Runner) -> int:
    """Stop our instance on this port and remove its state; a no-op when none runs."""
    stop_one(settings, runner)
    return 0


def cmd_status(settings: Settings, runner: Runner) -> int:
    """Print whether our instance answers on this port; exit 0 when it does."""
    pid = our_pid(settings, runner.main_marker)
    address = runner.address(settings)
    if pid is not None and runner.answers(settings):
        print(f"up {address} pid {pid} state {settings.state_dir}")
        return 0
    if pid is not None:
        print(f"not answering {address} pid {pid} (starting, or stuck)")
    else:
        print(f"down {address}")
    return EXIT_NOT_RUNNING


@contextlib.contextmanager
def reported(service: Service) -> Iterator[None]:
    """Turn a :class:`LocalError` into its one-line message and ``SystemExit(code)``."""
    try:
        yield
    except LocalError as exc:
        print(f"{service.prog}: error: {exc}", file=sys.stderr)
        raise SystemExit(exc.exit_code) from None
    except KeyboardInterrupt:
        raise SystemExit(130) from None

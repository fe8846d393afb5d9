"""Run a throwaway single-node Apache Kafka broker (KRaft) on 127.0.0.1 for tests and the demo.

Called through ``scripts/kafka-local``::

    kafka-local start  [--port N] [--owner-pid P]   fetch jars if needed, format, start,
                                    wait, print the address (stop it when P exits)
    kafka-local status [--port N]   exit 0 when the broker answers, 3 when it does not
    kafka-local stop   [--port N]   stop our broker, remove its state
    kafka-local fetch               only fetch and verify the jars
    kafka-local lock                maintainers: resolve the jars and rewrite the lock file

The broker is the official Apache Kafka build, assembled from its Maven artifacts
(``org.apache.kafka:kafka_2.13`` and its runtime dependencies) rather than the release
tarball, because Maven Central is the registry every machine here reaches. The jar set is
pinned by ``scripts/kafka-artifacts.lock`` (sha256 per file), so every machine runs the
same bytes. The standard library is enough to run this file; ``confluent_kafka`` is only
used, when importable, for a stronger readiness probe.

Failures print one line on stderr and exit non-zero: 1 for an error, 3 for "not running"
(``status``), 4 for "the port is taken by something else" (callers may retry elsewhere).
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import hashlib
import os
import re
import shlex
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final
from xml.sax.saxutils import escape

KAFKA_VERSION: Final = "4.1.1"
SCALA_VERSION: Final = "2.13"
# kafka_2.13 depends on slf4j-api only; this binding sends the broker's slf4j logging to the
# log4j2 file appender we configure (without it every Java-side log line is dropped).
EXTRA_ARTIFACTS: Final = ("org.apache.logging.log4j:log4j-slf4j-impl:2.24.3",)
# Pinned so resolution does not depend on the Maven release's default plugin version.
DEPENDENCY_PLUGIN_VERSION: Final = "3.8.1"
MIN_JAVA: Final = 17

HOST: Final = "127.0.0.1"
DEFAULT_PORT: Final = 9092
DEFAULT_JAVA_OPTS: Final = "-Xms256m -Xmx512m -XX:+UseSerialGC -XX:+ExitOnOutOfMemoryError"
DEFAULT_START_TIMEOUT: Final = 90.0
DEFAULT_STOP_TIMEOUT: Final = 20.0

REPO_ROOT: Final = Path(__file__).resolve().parent.parent
LOCK_FILE: Final = REPO_ROOT / "scripts" / "kafka-artifacts.lock"
DEFAULT_STATE_ROOT: Final = REPO_ROOT / "var"
STATE_MARKER_PROPERTY: Final = "-Dkafka.local.state="
PID_FILE: Final = "broker.pid"

EXIT_ERROR: Final = 1
EXIT_NOT_RUNNING: Final = 3
EXIT_PORT_TAKEN: Final = 4


class KafkaLocalError(Exception):
    """A failure reported to the user as one line; ``exit_code`` is the process exit code."""

    def __init__(self, message: str, exit_code: int = EXIT_ERROR) -> None:
        super().__init__(message)
        self.exit_code = exit_code


@dataclass(frozen=True, slots=True)
class Settings:
    """Everything a command needs, read once from the command line and the environment."""

    port: int
    state_root: Path
    cache_dir: Path
    maven_repo: str | None
    java_opts: tuple[str, ...]
    start_timeout: float
    stop_timeout: float

    @property
    def state_dir(self) -> Path:
        """This port's broker: config, data, logs and pid file, removed by ``stop``."""
        return self.state_root / f"kafka-{self.port}"

    @property
    def libs_dir(self) -> Path:
        """The verified jar set for :data:`KAFKA_VERSION`."""
        return self.cache_dir / KAFKA_VERSION / "libs"

    @property
    def address(self) -> str:
        """The bootstrap address clients use."""
        return f"{HOST}:{self.port}"


@dataclass(frozen=True, slots=True)
class LockEntry:
    """One pinned jar: its sha256 and its path in a Maven-2 repository layout."""

    sha256: str
    repo_path: str

    @property
    def file_name(self) -> str:
        """The name the jar has in the flat ``libs`` directory."""
        return self.repo_path.rsplit("/", 1)[-1]


def _log(message: str) -> None:
    """Progress goes to stderr so stdout carries only the answer (the address)."""
    print(f"kafka-local: {message}", file=sys.stderr, flush=True)


def _one_line(text: str, limit: int = 300) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def _float_env(name: str, default: float) -> float:
    raw = os.environ.get(name)
    if not raw:
        return default
    try:
        return float(raw)
    except ValueError:
        raise KafkaLocalError(f"{name} must be a number of seconds, got {raw!r}") from None


def load_settings(port: int | None) -> Settings:
    """Resolve the settings: ``--port`` wins over ``KAFKA_LOCAL_PORT`` over 9092."""
    if port is None:
        raw = os.environ.get("KAFKA_LOCAL_PORT") or str(DEFAULT_PORT)
        try:
            port = int(raw)
        except ValueError:
            raise KafkaLocalError(f"KAFKA_LOCAL_PORT must be a port number, got {raw!r}") from None
    if not 0 < port < 65536:
        raise KafkaLocalError(f"port must be between 1 and 65535, got {port}")
    cache_base = os.environ.get("KAFKA_LOCAL_CACHE_DIR")
    if cache_base:
        cache_dir = Path(cache_base).expanduser()
    else:
        xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
        cache_dir = Path(xdg) / "ometria-worker" / "kafka"
    state_root = Path(os.environ.get("KAFKA_LOCAL_STATE_ROOT") or DEFAULT_STATE_ROOT).expanduser()
    return Settings(
        port=port,
        state_root=state_root.absolute(),
        cache_dir=cache_dir.absolute(),
        maven_repo=os.environ.get("KAFKA_LOCAL_MAVEN_REPO") or None,
        java_opts=tuple(shlex.split(os.environ.get("KAFKA_LOCAL_JAVA_OPTS", DEFAULT_JAVA_OPTS))),
        start_timeout=_float_env("KAFKA_LOCAL_START_TIMEOUT", DEFAULT_START_TIMEOUT),
        stop_timeout=_float_env("KAFKA_LOCAL_STOP_TIMEOUT", DEFAULT_STOP_TIMEOUT),
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


def find_java() -> Path:
    """The ``java`` of ``JAVA_HOME``, else of ``PATH``; Java 17 or newer, or an error."""
    java_home = os.environ.get("JAVA_HOME")
    candidate: str | None = None
    if java_home and (Path(java_home) / "bin" / "java").is_file():
        candidate = str(Path(java_home) / "bin" / "java")
    else:
        candidate = shutil.which("java")
    if candidate is None:
        raise KafkaLocalError(
            f"Java {MIN_JAVA} or newer is required: no java on PATH and JAVA_HOME is not set"
        )
    try:
        probe = subprocess.run(
            [candidate, "-version"], capture_output=True, text=True, timeout=30, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise KafkaLocalError(f"cannot run {candidate} -version: {exc}") from None
    major = java_major_version(probe.stderr + probe.stdout)
    if major is None or major < MIN_JAVA:
        found = "an unknown version" if major is None else f"Java {major}"
        raise KafkaLocalError(
            f"Java {MIN_JAVA} or newer is required, found {found} at {candidate} "
            f"(set JAVA_HOME to a JDK {MIN_JAVA}+)"
        )
    return Path(candidate)


# --- Artifacts ----------------------------------------------------------------------------


def read_lock(path: Path = LOCK_FILE) -> list[LockEntry]:
    """Parse the lock file: ``<sha256>  <maven-2 repository path>`` per line, ``#`` comments."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise KafkaLocalError(f"cannot read {path}: {exc.strerror}") from None
    entries: list[LockEntry] = []
    for number, line in enumerate(lines, start=1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        parts = stripped.split()
        if len(parts) != 2 or not re.fullmatch(r"[0-9a-f]{64}", parts[0]):
            raise KafkaLocalError(f"{path}:{number}: expected '<sha256>  <path>'")
        entries.append(LockEntry(sha256=parts[0], repo_path=parts[1]))
    if not any(e.file_name == f"kafka_{SCALA_VERSION}-{KAFKA_VERSION}.jar" for e in entries):
        raise KafkaLocalError(f"{path} does not pin kafka_{SCALA_VERSION} {KAFKA_VERSION}")
    return entries


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def verify_jars(directory: Path, entries: Sequence[LockEntry]) -> None:
    """Check that ``directory`` holds exactly the locked jars, byte for byte."""
    present = {p.name for p in directory.glob("*.jar")}
    expected = {e.file_name for e in entries}
    if present != expected:
        missing = sorted(expected - present)
        extra = sorted(present - expected)
        raise KafkaLocalError(
            f"jar set in {directory} differs from {LOCK_FILE.name}: "
            f"missing {missing or 'none'}, unexpected {extra or 'none'}"
        )
    for entry in entries:
        actual = _sha256(directory / entry.file_name)
        if actual != entry.sha256:
            raise KafkaLocalError(
                f"sha256 mismatch for {entry.file_name}: expected {entry.sha256}, got {actual}"
            )


def _pom(maven_repo: str | None) -> str:
    coordinates = [f"org.apache.kafka:kafka_{SCALA_VERSION}:{KAFKA_VERSION}", *EXTRA_ARTIFACTS]
    dependencies = "\n".join(
        "    <dependency><groupId>{}</groupId><artifactId>{}</artifactId>"
        "<version>{}</version></dependency>".format(*c.split(":"))
        for c in coordinates
    )
    repositories = ""
    if maven_repo:
        # Declaring the id "central" replaces Maven's built-in default repository.
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
  <artifactId>kafka-local-libs</artifactId>
  <version>0</version>
  <packaging>pom</packaging>
{repositories}  <dependencies>
{dependencies}
  </dependencies>
</project>
"""


def resolve_with_mvn(mvn: str, work: Path, maven_repo: str | None) -> Path:
    """Let Maven resolve the runtime closure into ``work/repo`` in repository layout."""
    pom = work / "pom.xml"
    pom.write_text(_pom(maven_repo), encoding="utf-8")
    out = work / "repo"
    command = [
        mvn,
        "-B",
        "-q",
        "-Dstyle.color=never",
        "-f",
        str(pom),
        f"org.apache.maven.plugins:maven-dependency-plugin:{DEPENDENCY_PLUGIN_VERSION}"
        ":copy-dependencies",
        "-DincludeScope=runtime",
        "-Dmdep.useRepositoryLayout=true",
        f"-DoutputDirectory={out}",
    ]
    _log(f"fetching Apache Kafka {KAFKA_VERSION} jars with mvn")
    try:
        result = subprocess.run(
            command, capture_output=True, text=True, timeout=900, check=False, cwd=work
        )
    except subprocess.TimeoutExpired:
        raise KafkaLocalError("mvn did not finish fetching the Kafka jars within 900 s") from None
    if result.returncode != 0:
        # Maven colours some lines even in batch mode; drop the escapes before matching.
        plain = re.sub(r"\x1b\[[0-9;]*m", "", result.stdout + "\n" + result.stderr)
        output = [line.strip() for line in plain.splitlines() if line.strip()]
        errors = [line[7:] for line in output if line.startswith("[ERROR]") and line[7:].strip()]
        detail = errors[0] if errors else (output[-1] if output else "no output")
        detail = detail.removesuffix("-> [Help 1]")
        raise KafkaLocalError(f"mvn could not fetch the Kafka jars: {_one_line(detail)}")
    return out


def download_with_urllib(base_url: str, entries: Sequence[LockEntry], dest: Path) -> None:
    """Fetch each locked jar from a Maven-2 repository base URL, checking its sha256."""
    base = base_url.rstrip("/")
    _log(f"fetching {len(entries)} Apache Kafka {KAFKA_VERSION} jars from KAFKA_LOCAL_MAVEN_REPO")
    for entry in entries:
        url = f"{base}/{entry.repo_path}"
        target = dest / entry.file_name
        digest = hashlib.sha256()
        try:
            with urllib.request.urlopen(url, timeout=60) as response, target.open("wb") as out:
                for chunk in iter(lambda: response.read(1 << 16), b""):
                    digest.update(chunk)
                    out.write(chunk)
        except (urllib.error.URLError, OSError, ValueError) as exc:
            reason = getattr(exc, "reason", None) or exc
            raise KafkaLocalError(
                f"download of {entry.file_name} failed: {_one_line(str(reason))}"
            ) from None
        if digest.hexdigest() != entry.sha256:
            raise KafkaLocalError(f"sha256 mismatch for {entry.file_name} downloaded from {base}")


def ensure_libs(settings: Settings) -> Path:
    """The verified jar directory, fetched into the cache on first use and reused after."""
    entries = read_lock()
    libs = settings.libs_dir
    if libs.is_dir():
        try:
            verify_jars(libs, entries)
        except KafkaLocalError as exc:
            _log(f"cached jars rejected ({exc}); fetching again")
            shutil.rmtree(libs)
        else:
            return libs
    libs.parent.mkdir(parents=True, exist_ok=True)
    # Fetch beside the final place and rename, so a half-done fetch is never mistaken for a
    # cache, and two concurrent first starts cannot interleave files.
    with tempfile.TemporaryDirectory(prefix=".fetch-", dir=libs.parent) as tmp:
        work = Path(tmp)
        staged = work / "libs"
        staged.mkdir()
        mvn = shutil.which("mvn")
        if mvn is not None:
            resolved = resolve_with_mvn(mvn, work, settings.maven_repo)
            for jar in resolved.rglob("*.jar"):
                jar.replace(staged / jar.name)
        elif settings.maven_repo:
            download_with_urllib(settings.maven_repo, entries, staged)
        else:
            raise KafkaLocalError(
                "mvn is not installed and KAFKA_LOCAL_MAVEN_REPO is not set: install Maven, or "
                "set KAFKA_LOCAL_MAVEN_REPO to your Maven Central mirror's base URL"
            )
        verify_jars(staged, entries)
        try:
            staged.rename(libs)
        except OSError:
            if not libs.is_dir():
                raise
            # Another start won the race with the same verified bytes; keep theirs.
    return libs


def write_lock(settings: Settings) -> Path:
    """Resolve the jars with mvn and rewrite the lock file (maintainers, after a bump)."""
    mvn = shutil.which("mvn")
    if mvn is None:
        raise KafkaLocalError("the lock command needs mvn on PATH")
    with tempfile.TemporaryDirectory(prefix="kafka-lock-") as tmp:
        resolved = resolve_with_mvn(mvn, Path(tmp), settings.maven_repo)
        jars = sorted(resolved.rglob("*.jar"))
        names = [j.name for j in jars]
        if len(set(names)) != len(names):
            raise KafkaLocalError("two resolved jars share a file name; libs/ cannot be flat")
        lines = [
            f"# Apache Kafka {KAFKA_VERSION} (kafka_{SCALA_VERSION}) broker runtime for "
            "scripts/kafka-local, plus " + ", ".join(EXTRA_ARTIFACTS) + ".",
            "# Generated by `scripts/kafka-local lock`; edit KAFKA_VERSION in "
            "scripts/kafka_local.py, then regenerate.",
            "# <sha256>  <path in a Maven-2 repository>",
        ]
        lines += [f"{_sha256(j)}  {j.relative_to(resolved).as_posix()}" for j in jars]
    LOCK_FILE.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return LOCK_FILE


# --- Broker configuration -----------------------------------------------------------------


def server_properties(port: int, controller_port: int, data_dir: Path) -> str:
    """A combined broker+controller config sized for a 2-core machine and fast tests."""
    settings = {
        "process.roles": "broker,controller",
        "node.id": "1",
        "controller.quorum.voters": f"1@{HOST}:{controller_port}",
        "listeners": f"PLAINTEXT://{HOST}:{port},CONTROLLER://{HOST}:{controller_port}",
        "advertised.listeners": f"PLAINTEXT://{HOST}:{port}",
        "controller.listener.names": "CONTROLLER",
        "inter.broker.listener.name": "PLAINTEXT",
        "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
        "log.dirs": str(data_dir),
        "num.partitions": "1",
        "auto.create.topics.enable": "false",
        "offsets.topic.replication.factor": "1",
        # Fewer partitions: the group coordinator loads its first partition sooner.
        "offsets.topic.num.partitions": "4",
        "transaction.state.log.replication.factor": "1",
        "transaction.state.log.min.isr": "1",
        "transaction.state.log.num.partitions": "4",
        "share.coordinator.state.topic.replication.factor": "1",
        "share.coordinator.state.topic.min.isr": "1",
        "group.initial.rebalance.delay.ms": "0",
        # Small segments, indexes and cleaner buffer: the data is small and the heap is too.
        "log.segment.bytes": str(16 * 1024 * 1024),
        "log.index.size.max.bytes": str(1024 * 1024),
        "log.retention.hours": "1",
        "log.retention.check.interval.ms": "60000",
        "log.cleaner.dedupe.buffer.size": str(16 * 1024 * 1024),
        # Two cores: a few threads are plenty and leave CPU to the tests.
        "num.network.threads": "2",
        "num.io.threads": "4",
        "background.threads": "2",
        "num.recovery.threads.per.data.dir": "1",
    }
    return "".join(f"{key}={value}\n" for key, value in settings.items())


def log4j2_xml(log_file: Path) -> str:
    """A log4j2 config that writes everything to one file in the state dir, never a terminal."""
    path = escape(str(log_file), {'"': "&quot;"})
    return f"""<?xml version="1.0" encoding="UTF-8"?>
<Configuration status="warn">
  <Appenders>
    <File name="file" fileName="{path}">
      <PatternLayout pattern="[%d] %p %m (%c)%n"/>
    </File>
  </Appenders>
  <Loggers>
    <Logger name="kafka.request.logger" level="warn"/>
    <Root level="info"><AppenderRef ref="file"/></Root>
  </Loggers>
</Configuration>
"""


def cluster_id() -> str:
    """A random cluster id in Kafka's format (URL-safe base64 of a UUID, unpadded).

    Never one that starts with "-": the storage tool would read it as an option (about
    one id in 64 would make the start fail).
    """
    while True:
        cid = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode("ascii")
        if not cid.startswith("-"):
            return cid


# --- Processes and probes -----------------------------------------------------------------


def port_is_free(port: int) -> bool:
    """Whether Kafka could bind ``127.0.0.1:port`` (SO_REUSEADDR, as the JVM sets it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((HOST, port))
        except OSError:
            return False
        return True


def free_port() -> int:
    """A port the kernel says is free now (for the controller listener)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def _recv_exact(sock: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            raise ConnectionError("connection closed")
        data += chunk
    return data


def _kafka_string(text: str) -> bytes:
    raw = text.encode()
    return struct.pack(">h", len(raw)) + raw


def kafka_request(port: int, api_key: int, version: int, body: bytes, timeout: float) -> bytes:
    """One request/response with a v0/v1 header; returns the response after its header."""
    correlation_id = 0x4B4C
    header = struct.pack(">hhi", api_key, version, correlation_id) + _kafka_string("kafka-local")
    request = header + body
    with socket.create_connection((HOST, port), timeout=timeout) as sock:
        sock.sendall(struct.pack(">i", len(request)) + request)
        (size,) = struct.unpack(">i", _recv_exact(sock, 4))
        response = _recv_exact(sock, size)
    if len(response) < 4 or struct.unpack(">i", response[:4])[0] != correlation_id:
        raise ConnectionError("unexpected response")
    return response[4:]


def api_versions_probe(port: int, timeout: float = 1.0) -> bool:
    """Send a Kafka ApiVersions v0 request; True when the broker answers without error."""
    try:
        response = kafka_request(port, api_key=18, version=0, body=b"", timeout=timeout)
        (error_code,) = struct.unpack(">h", response[:2])
    except (OSError, struct.error):
        return False
    return bool(error_code == 0)


def group_coordinator_probe(port: int, timeout: float = 2.0) -> bool:
    """True once the group coordinator answers an offset fetch without "not ready" errors.

    The first such request makes the broker create ``__consumer_offsets``. Doing it here,
    before ``start`` returns, means no client sees the "coordinator load in progress"
    window (confluent-kafka 2.16.1's admin client even crashes on it).
    """
    group = _kafka_string("kafka-local-warm-up")
    try:
        # FindCoordinator v0: error_code, node_id, host, port.
        found = kafka_request(port, api_key=10, version=0, body=group, timeout=timeout)
        if struct.unpack(">h", found[:2])[0] != 0:
            return False
        # OffsetFetch v2 for all of the group's topics (a null array): [topics] error_code.
        fetched = kafka_request(
            port, api_key=9, version=2, body=group + struct.pack(">i", -1), timeout=timeout
        )
        (topic_count,) = struct.unpack(">i", fetched[:4])
        if topic_count > 0:
            return True  # only a group with commits has topics: the coordinator answered
        return bool(struct.unpack(">h", fetched[4:6])[0] == 0)
    except (OSError, struct.error):
        return False


def metadata_probe(address: str, timeout: float = 5.0) -> bool:
    """A metadata request through confluent_kafka when it is importable, else True."""
    try:
        from confluent_kafka import KafkaException  # noqa: PLC0415 - optional dependency
        from confluent_kafka.admin import AdminClient  # noqa: PLC0415
    except ImportError:
        return True
    # log_level 0: a refused first connect must not print librdkafka noise on the terminal.
    admin = AdminClient({"bootstrap.servers": address, "log_level": 0})
    try:
        metadata = admin.list_topics(timeout=timeout)
    except KafkaException:
        return False
    return bool(metadata.brokers)


def broker_answers(port: int) -> bool:
    """The broker speaks Kafka on ``port``, lists itself in metadata, and serves groups."""
    return (
        api_versions_probe(port)
        and metadata_probe(f"{HOST}:{port}")
        and group_coordinator_probe(port)
    )


def _read_pid(state_dir: Path) -> int | None:
    try:
        return int((state_dir / PID_FILE).read_text(encoding="ascii").strip())
    except (OSError, ValueError):
        return None


def _process_args(pid: int) -> list[str] | None:
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


def _is_alive(pid: int) -> bool:
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


def our_broker_pid(state_dir: Path) -> int | None:
    """The recorded pid if it is still the java process we started for ``state_dir``."""
    pid = _read_pid(state_dir)
    if pid is None or not _is_alive(pid):
        return None
    args = _process_args(pid)
    if args is None:
        return None
    marker = f"{STATE_MARKER_PROPERTY}{state_dir}"
    if marker in args and "kafka.Kafka" in args:
        return pid
    return None


def _last_error_line(*logs: Path) -> str | None:
    for log in logs:
        try:
            lines = log.read_text(encoding="utf-8", errors="replace").splitlines()
        except OSError:
            continue
        for line in reversed(lines):
            if " ERROR " in line or line.startswith(("Error", "Exception")):
                return _one_line(line, 240)
    return None


# --- Commands -----------------------------------------------------------------------------


def cmd_start(settings: Settings, owner_pid: int | None = None) -> int:
    """Start the broker (or find it running) and print its bootstrap address.

    With ``owner_pid``, a small watcher stops the broker once that process is gone, so a
    test run killed before its teardown (a timeout, a crash) leaves no broker behind.
    """
    state = settings.state_dir
    pid = our_broker_pid(state)
    if pid is not None:
        _wait_until_ready(settings, pid, process=None)
        print(settings.address)
        return 0
    java = find_java()
    if not port_is_free(settings.port):
        raise KafkaLocalError(
            f"port {settings.port} on {HOST} is already in use by another process "
            "(choose another with --port or KAFKA_LOCAL_PORT)",
            EXIT_PORT_TAKEN,
        )
    libs = ensure_libs(settings)
    if state.exists():
        shutil.rmtree(state)  # left by a broker that died or was killed: start clean
    data_dir, log_dir = state / "data", state / "logs"
    data_dir.mkdir(parents=True)
    log_dir.mkdir()
    controller_port = free_port()
    while controller_port == settings.port:
        controller_port = free_port()
    config = state / "server.properties"
    config.write_text(server_properties(settings.port, controller_port, data_dir), "utf-8")
    log4j = state / "log4j2.xml"
    log4j.write_text(log4j2_xml(log_dir / "server.log"), encoding="utf-8")
    classpath = f"{libs}{os.sep}*"
    logging_opt = f"-Dlog4j2.configurationFile={log4j}"

    _log(f"formatting storage in {data_dir}")
    fmt = subprocess.run(
        [str(java), "-Xmx256m", logging_opt, "-cp", classpath, "kafka.tools.StorageTool",
         "format", "-t", cluster_id(), "-c", str(config)],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    (log_dir / "format.log").write_text(fmt.stdout + fmt.stderr, encoding="utf-8")
    if fmt.returncode != 0:
        detail = _last_error_line(log_dir / "format.log") or f"exit {fmt.returncode}"
        raise KafkaLocalError(f"formatting the storage failed: {detail}")

    _log(f"starting Apache Kafka {KAFKA_VERSION} on {settings.address} (logs in {log_dir})")
    command = [
        str(java),
        *settings.java_opts,
        "-Djava.awt.headless=true",
        logging_opt,
        f"{STATE_MARKER_PROPERTY}{state}",
        "-cp",
        classpath,
        "kafka.Kafka",
        str(config),
    ]
    with (log_dir / "stdout.log").open("wb") as console:
        # Its own session: the broker outlives this command and a terminal's Ctrl-C.
        process = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=console,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            cwd=state,
        )
    (state / PID_FILE).write_text(f"{process.pid}\n", encoding="ascii")
    try:
        _wait_until_ready(settings, process.pid, process)
    except KeyboardInterrupt:
        # The broker ignores the terminal's Ctrl-C (own session): take it down with us.
        _terminate(process.pid, settings.stop_timeout)
        raise
    if owner_pid is not None:
        _spawn_watcher(settings, owner_pid)
    print(settings.address)
    return 0


def _spawn_watcher(settings: Settings, owner_pid: int) -> None:
    subprocess.Popen(
        [sys.executable, str(Path(__file__).resolve()), "watch", "--port", str(settings.port),
         "--owner-pid", str(owner_pid)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )  # fmt: skip


def cmd_watch(settings: Settings, owner_pid: int) -> int:
    """Stop this port's broker when ``owner_pid`` exits; return when the broker is gone."""
    while our_broker_pid(settings.state_dir) is not None:
        if not _is_alive(owner_pid):
            _stop_one(settings)
            break
        time.sleep(1.0)
    return 0


def _wait_until_ready(
    settings: Settings, pid: int, process: subprocess.Popen[bytes] | None
) -> None:
    deadline = time.monotonic() + settings.start_timeout
    logs = (settings.state_dir / "logs" / "server.log", settings.state_dir / "logs" / "stdout.log")
    while time.monotonic() < deadline:
        exited = process.poll() if process is not None else (None if _is_alive(pid) else -1)
        if exited is not None:
            detail = _last_error_line(*logs) or f"exit status {exited}"
            raise KafkaLocalError(f"the broker exited during start-up: {detail} (see {logs[0]})")
        if broker_answers(settings.port):
            return
        time.sleep(0.1)
    _terminate(pid, settings.stop_timeout)
    raise KafkaLocalError(
        f"the broker did not answer on {settings.address} within {settings.start_timeout:.0f} s "
        f"(see {logs[0]})"
    )


def _terminate(pid: int, timeout: float) -> bool:
    """SIGTERM (Kafka shuts down cleanly on it), then SIGKILL the group after ``timeout``."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not _is_alive(pid):
            return True
        time.sleep(0.05)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        if not _is_alive(pid):
            return False
        time.sleep(0.05)
    raise KafkaLocalError(f"broker pid {pid} survived SIGKILL")


def _stop_one(settings: Settings) -> None:
    state = settings.state_dir
    pid = our_broker_pid(state)
    if pid is None:
        if _read_pid(state) is not None:
            _log(f"pid in {state} is no longer our broker; removing stale state")
        else:
            _log(f"no broker of ours on port {settings.port}")
    else:
        _log(f"stopping broker pid {pid} on {settings.address}")
        if not _terminate(pid, settings.stop_timeout):
            _log(f"pid {pid} ignored SIGTERM for {settings.stop_timeout:.0f} s; killed it")
    # The --owner-pid watcher may be removing the same tree at the same moment.
    with contextlib.suppress(FileNotFoundError):
        shutil.rmtree(state)
    # Leave no empty var/ behind, but never remove a directory the user chose.
    if settings.state_root == DEFAULT_STATE_ROOT:
        with contextlib.suppress(OSError):
            settings.state_root.rmdir()


def cmd_stop(settings: Settings) -> int:
    """Stop our broker on this port and remove its state; a no-op when none runs."""
    _stop_one(settings)
    return 0


def cmd_status(settings: Settings) -> int:
    """Print whether our broker answers on this port; exit 0 when it does."""
    pid = our_broker_pid(settings.state_dir)
    if pid is not None and broker_answers(settings.port):
        print(f"up {settings.address} pid {pid} state {settings.state_dir}")
        return 0
    if pid is not None:
        print(f"not answering {settings.address} pid {pid} (starting, or stuck)")
    else:
        print(f"down {settings.address}")
    return EXIT_NOT_RUNNING


def build_parser() -> argparse.ArgumentParser:
    """The command line: one sub-command per action, each taking ``--port``."""
    parser = argparse.ArgumentParser(
        prog="kafka-local",
        description=f"A throwaway single-node Apache Kafka {KAFKA_VERSION} broker on {HOST}.",
    )
    port = argparse.ArgumentParser(add_help=False)
    port.add_argument(
        "--port", type=int, help=f"broker port (default $KAFKA_LOCAL_PORT or {DEFAULT_PORT})"
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    start = sub.add_parser("start", parents=[port], help="start the broker and print its address")
    start.add_argument("--owner-pid", type=int, help="stop the broker when this process exits")
    sub.add_parser("stop", parents=[port], help="stop the broker and remove its state")
    sub.add_parser("status", parents=[port], help="exit 0 when the broker answers")
    sub.add_parser("fetch", help="fetch and verify the jars only")
    sub.add_parser("lock", help="re-resolve the jars with mvn and rewrite the lock file")
    watch = sub.add_parser("watch", parents=[port], help="(internal) the --owner-pid watcher")
    watch.add_argument("--owner-pid", type=int, required=True)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the process exit code."""
    args = build_parser().parse_args(argv)
    try:
        settings = load_settings(getattr(args, "port", None))
        match args.command:
            case "start":
                return cmd_start(settings, owner_pid=args.owner_pid)
            case "watch":
                return cmd_watch(settings, owner_pid=args.owner_pid)
            case "stop":
                return cmd_stop(settings)
            case "status":
                return cmd_status(settings)
            case "fetch":
                print(ensure_libs(settings))
                return 0
            case _:
                print(write_lock(settings))
                return 0
    except KafkaLocalError as exc:
        print(f"kafka-local: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    raise SystemExit(main())

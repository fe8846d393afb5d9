"""Run a throwaway single-node Apache Kafka broker (KRaft) on 127.0.0.1 for tests and the demo.

Called through ``scripts/kafka-local``::

    kafka-local start  [--port N] [--owner-pid P]   fetch jars if needed, format, start,
                                    wait, print the address (stop it when P exits)
    kafka-local start --keep-data [--port N]   start again over the data a kill left
    kafka-local status [--port N]   exit 0 when the broker answers, 3 when it does not
    kafka-local kill   [--port N]   SIGKILL our broker (a crash), keep its state
    kafka-local stop   [--port N]   stop our broker, remove its state
    kafka-local fetch               only fetch and verify the jars
    kafka-local lock                maintainers: resolve the jars and rewrite the lock file

The broker is the official Apache Kafka build, assembled from its Maven artifacts
(``org.apache.kafka:kafka_2.13`` and its runtime dependencies) rather than the release
tarball, because Maven Central is the registry every machine here reaches. The jar set is
pinned by ``scripts/kafka-artifacts.lock`` (sha256 per file), so every machine runs the
same bytes. The standard library is enough to run this file; ``confluent_kafka`` is only
used, when importable, for a stronger readiness probe. What it shares with
``scripts/schema-registry-local`` (settings, cache, fetching, pid files, start, stop,
status, the watcher) is in ``scripts/local_service.py``; this file has what is Kafka's.

Failures print one line on stderr and exit non-zero: 1 for an error, 3 for "not running"
(``status``), 4 for "the port is taken by something else" (callers may retry elsewhere).
"""

from __future__ import annotations

import argparse
import base64
import os
import shutil
import socket
import struct
import subprocess
import tempfile
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Final
from xml.sax.saxutils import escape

# A sibling file: running this one puts its directory first on sys.path.
import local_service as ls

KAFKA_VERSION: Final = "4.1.1"
SCALA_VERSION: Final = "2.13"
# kafka_2.13 depends on slf4j-api only; this binding sends the broker's slf4j logging to the
# log4j2 file appender we configure (without it every Java-side log line is dropped).
EXTRA_ARTIFACTS: Final = ("org.apache.logging.log4j:log4j-slf4j-impl:2.24.3",)

HOST: Final = ls.HOST
LOCK_FILE: Final = ls.REPO_ROOT / "scripts" / "kafka-artifacts.lock"

SERVICE: Final = ls.Service(
    prog="kafka-local",
    noun="broker",
    env_prefix="KAFKA_LOCAL",
    default_port=9092,
    cache_name="kafka",
    state_name="kafka",
    default_java_opts="-Xms256m -Xmx512m -XX:+UseSerialGC -XX:+ExitOnOutOfMemoryError",
    default_start_timeout=90.0,
    default_stop_timeout=20.0,
    state_marker="-Dkafka.local.state=",
    pid_file="broker.pid",
)


def libs_dir(settings: ls.Settings) -> Path:
    """The verified jar set for :data:`KAFKA_VERSION`."""
    return settings.cache_dir / KAFKA_VERSION / "libs"


def address(settings: ls.Settings) -> str:
    """The bootstrap address clients use."""
    return f"{HOST}:{settings.port}"


# --- Artifacts ----------------------------------------------------------------------------


def read_lock(path: Path = LOCK_FILE) -> list[ls.LockEntry]:
    """The pinned jars: ``<sha256>  <maven-2 repository path>`` per line."""
    entries = ls.read_lock(path)
    if not any(e.file_name == f"kafka_{SCALA_VERSION}-{KAFKA_VERSION}.jar" for e in entries):
        raise ls.LocalError(f"{path} does not pin kafka_{SCALA_VERSION} {KAFKA_VERSION}")
    return entries


def verify_jars(directory: Path, entries: Sequence[ls.LockEntry]) -> None:
    """Check that ``directory`` holds exactly the locked jars (flat), byte for byte."""
    ls.verify_files(directory, {e.file_name: e.sha256 for e in entries}, LOCK_FILE.name)


def resolve_with_mvn(mvn: str, work: Path, maven_repo: str | None) -> Path:
    """Let Maven resolve the runtime closure into ``work/repo`` in repository layout."""
    pom = work / "pom.xml"
    coordinates = [f"org.apache.kafka:kafka_{SCALA_VERSION}:{KAFKA_VERSION}", *EXTRA_ARTIFACTS]
    pom.write_text(ls.generated_pom("kafka-local-libs", maven_repo, coordinates), "utf-8")
    out = work / "repo"
    SERVICE.log(f"fetching Apache Kafka {KAFKA_VERSION} jars with mvn")
    ls.run_mvn(
        mvn,
        ["-f", str(pom), ls.dependency_plugin("copy-dependencies"), "-DincludeScope=runtime",
         "-Dmdep.useRepositoryLayout=true", f"-DoutputDirectory={out}"],
        cwd=work,
        what="the Kafka jars",
    )  # fmt: skip
    return out


def ensure_libs(settings: ls.Settings) -> Path:
    """The verified jar directory, fetched into the cache on first use and reused after."""
    entries = read_lock()

    def fill(staged: Path, work: Path) -> None:
        mvn = shutil.which("mvn")
        if mvn is not None:
            resolved = resolve_with_mvn(mvn, work, settings.maven_repo)
            for jar in resolved.rglob("*.jar"):
                jar.replace(staged / jar.name)
        elif settings.maven_repo:
            ls.download(SERVICE, settings.maven_repo, entries, staged, "KAFKA_LOCAL_MAVEN_REPO")
        else:
            raise ls.LocalError(
                "mvn is not installed and KAFKA_LOCAL_MAVEN_REPO is not set: install Maven, or "
                "set KAFKA_LOCAL_MAVEN_REPO to your Maven Central mirror's base URL"
            )

    return ls.ensure_cached(SERVICE, libs_dir(settings), lambda d: verify_jars(d, entries), fill)


def write_lock(settings: ls.Settings) -> Path:
    """Resolve the jars with mvn and rewrite the lock file (maintainers, after a bump)."""
    mvn = shutil.which("mvn")
    if mvn is None:
        raise ls.LocalError("the lock command needs mvn on PATH")
    with tempfile.TemporaryDirectory(prefix="kafka-lock-") as tmp:
        resolved = resolve_with_mvn(mvn, Path(tmp), settings.maven_repo)
        jars = sorted(resolved.rglob("*.jar"))
        names = [j.name for j in jars]
        if len(set(names)) != len(names):
            raise ls.LocalError("two resolved jars share a file name; libs/ cannot be flat")
        lines = [
            f"# Apache Kafka {KAFKA_VERSION} (kafka_{SCALA_VERSION}) broker runtime for "
            "scripts/kafka-local, plus " + ", ".join(EXTRA_ARTIFACTS) + ".",
            "# Generated by `scripts/kafka-local lock`; edit KAFKA_VERSION in "
            "scripts/kafka_local.py, then regenerate.",
            "# <sha256>  <path in a Maven-2 repository>",
        ]
        lines += [f"{ls.sha256_file(j)}  {j.relative_to(resolved).as_posix()}" for j in jars]
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


# --- Probes -------------------------------------------------------------------------------


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


# --- Commands -----------------------------------------------------------------------------


def launch(settings: ls.Settings, java: Path) -> subprocess.Popen[bytes]:
    """Fetch the jars if needed, format a fresh storage dir and start the broker."""
    libs = ensure_libs(settings)
    state = ls.fresh_state_dir(settings)
    data_dir, log_dir = state / "data", settings.log_dir
    data_dir.mkdir()
    log_dir.mkdir()
    controller_port = ls.free_port()
    while controller_port == settings.port:
        controller_port = ls.free_port()
    config = state / "server.properties"
    config.write_text(server_properties(settings.port, controller_port, data_dir), "utf-8")
    log4j = state / "log4j2.xml"
    log4j.write_text(log4j2_xml(log_dir / "server.log"), encoding="utf-8")
    classpath = f"{libs}{os.sep}*"
    logging_opt = f"-Dlog4j2.configurationFile={log4j}"

    SERVICE.log(f"formatting storage in {data_dir}")
    fmt = subprocess.run(
        [str(java), "-Xmx256m", logging_opt, "-cp", classpath, "kafka.tools.StorageTool",
         "format", "-t", cluster_id(), "-c", str(config)],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    (log_dir / "format.log").write_text(fmt.stdout + fmt.stderr, encoding="utf-8")
    if fmt.returncode != 0:
        detail = ls.last_error_line(log_dir / "format.log") or f"exit {fmt.returncode}"
        raise ls.LocalError(f"formatting the storage failed: {detail}")

    SERVICE.log(f"starting Apache Kafka {KAFKA_VERSION} on {address(settings)} (logs in {log_dir})")
    return _spawn_broker(settings, java, libs)


def relaunch(settings: ls.Settings, java: Path) -> subprocess.Popen[bytes]:
    """Start the broker again over the state a killed one left: same config (so the same
    controller port), same cluster id, topics, records and committed offsets."""
    state = settings.state_dir
    kept = [state / "server.properties", state / "log4j2.xml", state / "data" / "meta.properties"]
    missing = [str(path.relative_to(state)) for path in kept if not path.is_file()]
    if missing:
        raise ls.LocalError(f"{state} is not a kept broker state: missing {', '.join(missing)}")
    libs = ensure_libs(settings)
    SERVICE.log(f"starting Apache Kafka {KAFKA_VERSION} on {address(settings)} over kept data")
    return _spawn_broker(settings, java, libs)


def _spawn_broker(settings: ls.Settings, java: Path, libs: Path) -> subprocess.Popen[bytes]:
    state = settings.state_dir
    command = [
        str(java),
        *settings.java_opts,
        "-Djava.awt.headless=true",
        f"-Dlog4j2.configurationFile={state / 'log4j2.xml'}",
        f"{SERVICE.state_marker}{state}",
        "-cp",
        f"{libs}{os.sep}*",
        MAIN_CLASS,
        str(state / "server.properties"),
    ]
    return ls.spawn_jvm(settings, command, cwd=state)


def _logs(settings: ls.Settings) -> tuple[Path, ...]:
    return (settings.log_dir / "server.log", settings.log_dir / "stdout.log")


MAIN_CLASS: Final = "kafka.Kafka"
RUNNER: Final = ls.Runner(
    launch=launch,
    answers=lambda settings: broker_answers(settings.port),
    address=address,
    main_marker=MAIN_CLASS,
    logs=_logs,
    script=Path(__file__).resolve(),
    relaunch=relaunch,
)


def build_parser() -> argparse.ArgumentParser:
    """The command line: one sub-command per action, each taking ``--port``."""
    parser = argparse.ArgumentParser(
        prog="kafka-local",
        description=f"A throwaway single-node Apache Kafka {KAFKA_VERSION} broker on {HOST}.",
    )
    port = argparse.ArgumentParser(add_help=False)
    port.add_argument(
        "--port",
        type=int,
        help=f"broker port (default $KAFKA_LOCAL_PORT or {SERVICE.default_port})",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    start = sub.add_parser("start", parents=[port], help="start the broker and print its address")
    start.add_argument("--owner-pid", type=int, help="stop the broker when this process exits")
    start.add_argument(
        "--keep-data",
        action="store_true",
        help="start again over the config and data a killed broker left (see kill)",
    )
    sub.add_parser("stop", parents=[port], help="stop the broker and remove its state")
    sub.add_parser(
        "kill", parents=[port], help="SIGKILL the broker at once (a crash); keep its state"
    )
    sub.add_parser("status", parents=[port], help="exit 0 when the broker answers")
    sub.add_parser("fetch", help="fetch and verify the jars only")
    sub.add_parser("lock", help="re-resolve the jars with mvn and rewrite the lock file")
    watch = sub.add_parser("watch", parents=[port], help="(internal) the --owner-pid watcher")
    watch.add_argument("--owner-pid", type=int, required=True)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the process exit code."""
    args = build_parser().parse_args(argv)
    with ls.reported(SERVICE):
        settings = ls.load_settings(SERVICE, getattr(args, "port", None))
        match args.command:
            case "start":
                return ls.cmd_start(
                    settings, RUNNER, owner_pid=args.owner_pid, keep_data=args.keep_data
                )
            case "kill":
                return ls.cmd_kill(settings, RUNNER)
            case "watch":
                return ls.cmd_watch(settings, RUNNER, owner_pid=args.owner_pid)
            case "stop":
                return ls.cmd_stop(settings, RUNNER)
            case "status":
                return ls.cmd_status(settings, RUNNER)
            case "fetch":
                print(ensure_libs(settings))
                return 0
            case _:
                print(write_lock(settings))
                return 0


if __name__ == "__main__":
    raise SystemExit(main())

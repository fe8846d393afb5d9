"""Run a throwaway Schema Registry (Apicurio Registry, in memory) on 127.0.0.1 for tests and CI.

Called through ``scripts/schema-registry-local``::

    schema-registry-local start  [--port N] [--owner-pid P]   fetch the bundle if needed,
                                    start, wait, print the Confluent-compatible API's base
                                    URL (stop it when P exits)
    schema-registry-local status [--port N]   exit 0 when it answers, 3 when it does not
    schema-registry-local stop   [--port N]   stop our registry, remove its state
    schema-registry-local fetch               only fetch and verify the bundle
    schema-registry-local lock                maintainers: fetch the bundle and rewrite the lock

The registry is Apicurio Registry's runnable bundle from Maven Central
(``io.apicurio:apicurio-registry-app:3.0.9``, classifier ``all``, a tar.gz of a Quarkus
application), which serves the Confluent Schema Registry API under ``/apis/ccompat/v7``.
3.0.x runs on Java 17 (3.3.x needs 21). Storage is its default, an in-memory H2 database,
so every start is empty. ``scripts/schema-registry.lock`` pins the bundle's sha256 and
every file unpacked from it. What this shares with ``scripts/kafka-local`` is in
``scripts/local_service.py``.

Failures print one line on stderr and exit non-zero: 1 for an error, 3 for "not running"
(``status``), 4 for "the port is taken by something else" (callers may retry elsewhere).
"""

from __future__ import annotations

import argparse
import json
import shutil
import stat
import subprocess
import tarfile
import tempfile
import urllib.request
from collections.abc import Sequence
from pathlib import Path, PurePosixPath
from typing import Final

# A sibling file: running this one puts its directory first on sys.path.
import local_service as ls

APICURIO_VERSION: Final = "3.0.9"
ARTIFACT: Final = f"io.apicurio:apicurio-registry-app:{APICURIO_VERSION}:tar.gz:all"
BUNDLE_PATH: Final = (
    f"io/apicurio/apicurio-registry-app/{APICURIO_VERSION}/"
    f"apicurio-registry-app-{APICURIO_VERSION}-all.tar.gz"
)
RUNNER_JAR: Final = f"apicurio-registry-app-{APICURIO_VERSION}-runner.jar"
MAVEN_CENTRAL: Final = "https://repo.maven.apache.org/maven2"
LOCK_FILE: Final = ls.REPO_ROOT / "scripts" / "schema-registry.lock"
CCOMPAT_PATH: Final = "/apis/ccompat/v7"

SERVICE: Final = ls.Service(
    prog="schema-registry-local",
    noun="registry",
    env_prefix="SCHEMA_REGISTRY_LOCAL",
    default_port=8081,
    cache_name="schema-registry",
    state_name="schema-registry",
    default_java_opts="-Xms64m -Xmx256m -XX:+UseSerialGC -XX:+ExitOnOutOfMemoryError",
    default_start_timeout=90.0,
    default_stop_timeout=20.0,
    state_marker="-Dschema.registry.local.state=",
    pid_file="registry.pid",
)


def app_dir(settings: ls.Settings) -> Path:
    """The verified, unpacked bundle for :data:`APICURIO_VERSION`."""
    return settings.cache_dir / APICURIO_VERSION / "app"


def address(settings: ls.Settings) -> str:
    """The base URL of the Confluent-compatible API."""
    return f"http://{ls.HOST}:{settings.port}{CCOMPAT_PATH}"


# --- The bundle ---------------------------------------------------------------------------


def read_lock(path: Path = LOCK_FILE) -> tuple[ls.LockEntry, dict[str, str]]:
    """The bundle's entry, and every unpacked file (path inside the bundle → sha256)."""
    entries = ls.read_lock(path)
    bundle = [e for e in entries if e.path == BUNDLE_PATH]
    if len(bundle) != 1:
        raise ls.LocalError(f"{path} does not pin {BUNDLE_PATH} exactly once")
    files = {e.path: e.sha256 for e in entries if e.path != BUNDLE_PATH}
    if RUNNER_JAR not in files:
        raise ls.LocalError(f"{path} does not pin {RUNNER_JAR}")
    return bundle[0], files


def _fetch_with_mvn(mvn: str, work: Path, maven_repo: str | None) -> Path:
    pom = work / "pom.xml"
    pom.write_text(ls.generated_pom("schema-registry-local", maven_repo, ()), encoding="utf-8")
    out = work / "mvn"
    SERVICE.log(f"fetching Apicurio Registry {APICURIO_VERSION} (~109 MB) with mvn")
    ls.run_mvn(
        mvn,
        ["-f", str(pom), ls.dependency_plugin("copy"), f"-Dartifact={ARTIFACT}",
         f"-DoutputDirectory={out}"],
        cwd=work,
        what="the Apicurio Registry bundle",
    )  # fmt: skip
    return out / BUNDLE_PATH.rsplit("/", 1)[-1]


def fetch_bundle(settings: ls.Settings, work: Path, sha256: str | None) -> Path:
    """The bundle in ``work``, checked against ``sha256`` when given.

    Maven first when it is installed (its settings: mirrors, proxies). Maven resolves an
    artifact's pom and parent poms even for a plain copy, and where a mirror lacks
    Apicurio's parent pom (``io.apicurio:apicurio-registry``) that fails; the bundle is
    then downloaded directly, as it is without Maven, from
    ``$SCHEMA_REGISTRY_LOCAL_MAVEN_REPO`` or else Maven Central.
    """
    mvn = shutil.which("mvn")
    if mvn is not None:
        try:
            bundle = _fetch_with_mvn(mvn, work, settings.maven_repo)
        except ls.LocalError as exc:
            SERVICE.log(f"{exc}; downloading it directly")
        else:
            actual = ls.sha256_file(bundle)
            if sha256 is not None and actual != sha256:
                raise ls.LocalError(
                    f"sha256 mismatch for {bundle.name} from mvn: expected {sha256}, got {actual}"
                )
            return bundle
    base = settings.maven_repo or MAVEN_CENTRAL
    source = "SCHEMA_REGISTRY_LOCAL_MAVEN_REPO" if settings.maven_repo else MAVEN_CENTRAL
    entry = ls.LockEntry(sha256=sha256 or "", path=BUNDLE_PATH)
    ls.download(SERVICE, base, [entry], work, source, check=sha256 is not None)
    return work / entry.file_name


def unpack(bundle: Path, dest: Path) -> None:
    """Unpack regular files and directories only, refusing paths that leave ``dest``."""
    try:
        with tarfile.open(bundle, "r:gz") as archive:
            for member in archive:
                name = PurePosixPath(member.name)
                if name.is_absolute() or ".." in name.parts:
                    raise ls.LocalError(f"{bundle.name}: unsafe path {member.name!r}")
                target = dest.joinpath(*name.parts) if name.parts else dest
                if member.isdir():
                    target.mkdir(parents=True, exist_ok=True)
                    continue
                if not member.isfile():
                    raise ls.LocalError(f"{bundle.name}: {member.name!r} is not a regular file")
                target.parent.mkdir(parents=True, exist_ok=True)
                source = archive.extractfile(member)
                assert source is not None  # a regular file always has content
                with source, target.open("wb") as out:
                    shutil.copyfileobj(source, out, 1 << 16)
                target.chmod(stat.S_IRUSR | stat.S_IWUSR | stat.S_IRGRP | stat.S_IROTH)
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise ls.LocalError(f"cannot unpack {bundle.name}: {exc}") from None


def ensure_app(settings: ls.Settings) -> Path:
    """The verified unpacked bundle, fetched into the cache on first use and reused after.

    Every start checks the unpacked files against the lock (about 0.2 s); the tarball
    itself is checked when fetched and not kept.
    """
    bundle_entry, files = read_lock()

    def verify(directory: Path) -> None:
        ls.verify_files(directory, files, LOCK_FILE.name)

    def fill(staged: Path, work: Path) -> None:
        unpack(fetch_bundle(settings, work, bundle_entry.sha256), staged)

    return ls.ensure_cached(SERVICE, app_dir(settings), verify, fill)


def write_lock(settings: ls.Settings) -> Path:
    """Fetch the bundle and rewrite the lock file (maintainers, after a version bump)."""
    with tempfile.TemporaryDirectory(prefix="schema-registry-lock-") as tmp:
        work = Path(tmp)
        bundle = fetch_bundle(settings, work, sha256=None)
        unpacked = work / "app"
        unpacked.mkdir()
        unpack(bundle, unpacked)
        lines = [
            f"# Apicurio Registry {APICURIO_VERSION} ({ARTIFACT}) for "
            "scripts/schema-registry-local.",
            "# Generated by `scripts/schema-registry-local lock`; edit APICURIO_VERSION in "
            "scripts/schema_registry_local.py, then regenerate.",
            "# <sha256>  <path in a Maven-2 repository>: the bundle, checked when fetched",
            f"{ls.sha256_file(bundle)}  {BUNDLE_PATH}",
            "# <sha256>  <path in the bundle>: the unpacked files, checked at every start",
        ]
        files = sorted(p for p in unpacked.rglob("*") if not p.is_dir())
        lines += [f"{ls.sha256_file(p)}  {p.relative_to(unpacked).as_posix()}" for p in files]
    LOCK_FILE.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return LOCK_FILE


# --- Running it ---------------------------------------------------------------------------


def java_properties(settings: ls.Settings, management_port: int) -> list[str]:
    """The ``-D`` options: loopback only, in-memory storage, logs in the state dir."""
    state, logs = settings.state_dir, settings.log_dir
    scratch = state / "tmp"
    properties = {
        "quarkus.http.host": ls.HOST,
        "quarkus.http.port": str(settings.port),
        # This bundle is built without Quarkus' separate management interface (health and
        # metrics are on the HTTP port); should a build have it, it stays on loopback too.
        "quarkus.management.host": ls.HOST,
        "quarkus.management.port": str(management_port),
        # Apicurio's defaults, spelled out: SQL storage on an in-memory H2 database.
        "apicurio.storage.kind": "sql",
        "apicurio.storage.sql.kind": "h2",
        # GET /subjects lists at most this many (Apicurio's default: 1,000); Confluent's
        # has no such cut, and a registry kept between test runs outgrows it.
        "apicurio.ccompat.max-subjects": "1000000",
        "quarkus.log.console.enable": "false",
        "quarkus.log.file.enable": "true",
        "quarkus.log.file.path": str(logs / "registry.log"),
        "quarkus.log.file.json": "false",
        "quarkus.log.file.format": "%d{yyyy-MM-dd HH:mm:ss,SSS} %-5p [%c{3.}] %s%e%n",
        "java.io.tmpdir": str(scratch),
        "apicurio.import.work-dir": str(scratch),
        "apicurio.storage.snapshot.location": str(scratch),
    }
    return [f"-D{key}={value}" for key, value in properties.items()]


def launch(settings: ls.Settings, java: Path) -> subprocess.Popen[bytes]:
    """Fetch the bundle if needed and start the registry with a fresh state dir."""
    app = ensure_app(settings)
    state = ls.fresh_state_dir(settings)
    (state / "tmp").mkdir()
    management_port = ls.free_port()
    while management_port == settings.port:
        management_port = ls.free_port()
    SERVICE.log(
        f"starting Apicurio Registry {APICURIO_VERSION} on {address(settings)} "
        f"(logs in {settings.log_dir})"
    )
    command = [
        str(java),
        *settings.java_opts,
        "-Djava.awt.headless=true",
        f"{SERVICE.state_marker}{state}",
        *java_properties(settings, management_port),
        "-jar",
        str(app / RUNNER_JAR),
    ]
    return ls.spawn_jvm(settings, command, cwd=state)


def registry_answers(settings: ls.Settings, timeout: float = 2.0) -> bool:
    """True when ``GET {base}/subjects`` answers 200 with a JSON list."""
    try:
        with urllib.request.urlopen(f"{address(settings)}/subjects", timeout=timeout) as answer:
            return answer.status == 200 and isinstance(json.load(answer), list)
    except (OSError, ValueError):
        return False


def _logs(settings: ls.Settings) -> tuple[Path, ...]:
    return (settings.log_dir / "registry.log", settings.log_dir / "stdout.log")


RUNNER: Final = ls.Runner(
    launch=launch,
    answers=registry_answers,
    address=address,
    main_marker=RUNNER_JAR,
    logs=_logs,
    script=Path(__file__).resolve(),
)


def build_parser() -> argparse.ArgumentParser:
    """The command line: one sub-command per action, each taking ``--port``."""
    parser = argparse.ArgumentParser(
        prog=SERVICE.prog,
        description=f"A throwaway Apicurio Registry {APICURIO_VERSION} (in memory) on "
        f"{ls.HOST}, serving the Confluent Schema Registry API.",
    )
    port = argparse.ArgumentParser(add_help=False)
    port.add_argument(
        "--port",
        type=int,
        help=f"HTTP port (default $SCHEMA_REGISTRY_LOCAL_PORT or {SERVICE.default_port})",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    start = sub.add_parser("start", parents=[port], help="start the registry and print its URL")
    start.add_argument("--owner-pid", type=int, help="stop the registry when this process exits")
    sub.add_parser("stop", parents=[port], help="stop the registry and remove its state")
    sub.add_parser("status", parents=[port], help="exit 0 when the registry answers")
    sub.add_parser("fetch", help="fetch and verify the bundle only")
    sub.add_parser("lock", help="fetch the bundle and rewrite the lock file")
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
                return ls.cmd_start(settings, RUNNER, owner_pid=args.owner_pid)
            case "watch":
                return ls.cmd_watch(settings, RUNNER, owner_pid=args.owner_pid)
            case "stop":
                return ls.cmd_stop(settings, RUNNER)
            case "status":
                return ls.cmd_status(settings, RUNNER)
            case "fetch":
                print(ensure_app(settings))
                return 0
            case _:
                print(write_lock(settings))
                return 0


if __name__ == "__main__":
    raise SystemExit(main())

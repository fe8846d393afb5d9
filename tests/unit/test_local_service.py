"""The pure parts of scripts/local_service.py and scripts/schema_registry_local.py.

The scripts run the local Kafka broker and Schema Registry (their start/stop/status are
exercised by every integration test through the fixtures); here: version parsing, the
lock files, the cache check, and unpacking the registry bundle safely.
"""

from __future__ import annotations

import hashlib
import importlib.util
import io
import sys
import tarfile
from pathlib import Path
from types import ModuleType

import pytest

SCRIPTS = Path(__file__).resolve().parents[2] / "scripts"


def _load(name: str) -> ModuleType:
    # The scripts import each other as siblings, the way running them makes possible.
    if str(SCRIPTS) not in sys.path:
        sys.path.insert(0, str(SCRIPTS))
    spec = importlib.util.spec_from_file_location(name, SCRIPTS / f"{name}.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


ls = _load("local_service")
registry = _load("schema_registry_local")
kafka = _load("kafka_local")


@pytest.mark.parametrize(
    ("output", "major"),
    [
        ('openjdk version "17.0.15" 2025-04-15', 17),
        ('java version "1.8.0_392"', 8),
        ('openjdk version "21" 2023-09-19', 21),
        ("no version here", None),
    ],
)
def test_java_major_version(output: str, major: int | None) -> None:
    assert ls.java_major_version(output) == major


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_a_lock_file_is_sha256_and_path_per_line(tmp_path: Path) -> None:
    lock = tmp_path / "x.lock"
    lock.write_text(f"# comment\n\n{_sha(b'a')}  lib/a.jar\n{_sha(b'b')}  b.jar\n")

    entries = ls.read_lock(lock)

    assert [(e.sha256, e.path, e.file_name) for e in entries] == [
        (_sha(b"a"), "lib/a.jar", "a.jar"),
        (_sha(b"b"), "b.jar", "b.jar"),
    ]


@pytest.mark.parametrize("line", ["abc  x.jar", f"{_sha(b'a')}", f"{_sha(b'a')}  a b"])
def test_a_malformed_lock_line_names_its_line(tmp_path: Path, line: str) -> None:
    lock = tmp_path / "x.lock"
    lock.write_text(f"# first\n{line}\n")

    with pytest.raises(ls.LocalError, match=r"x\.lock:2: expected"):
        ls.read_lock(lock)


def test_the_cache_check_names_missing_unexpected_and_changed_files(tmp_path: Path) -> None:
    (tmp_path / "lib").mkdir()
    (tmp_path / "lib" / "a.jar").write_bytes(b"a")
    (tmp_path / "extra.jar").write_bytes(b"x")
    expected = {"lib/a.jar": _sha(b"a"), "b.jar": _sha(b"b")}

    with pytest.raises(ls.LocalError, match=r"missing \['b.jar'\], unexpected \['extra.jar'\]"):
        ls.verify_files(tmp_path, expected, "x.lock")
    (tmp_path / "extra.jar").unlink()
    (tmp_path / "b.jar").write_bytes(b"changed")
    with pytest.raises(ls.LocalError, match=r"sha256 mismatch for b\.jar"):
        ls.verify_files(tmp_path, expected, "x.lock")
    (tmp_path / "b.jar").write_bytes(b"b")
    ls.verify_files(tmp_path, expected, "x.lock")


def test_the_generated_pom_escapes_the_mirror_url() -> None:
    pom = ls.generated_pom("x", "https://mirror.example/m2?a=1&b=2", ["g:a:1"])

    assert "<url>https://mirror.example/m2?a=1&amp;b=2</url>" in pom
    assert "<groupId>g</groupId><artifactId>a</artifactId><version>1</version>" in pom


def _tarball(path: Path, members: list[tarfile.TarInfo], data: dict[str, bytes]) -> Path:
    with tarfile.open(path, "w:gz") as archive:
        for member in members:
            content = data.get(member.name)
            if content is not None:
                member.size = len(content)
            archive.addfile(member, io.BytesIO(content) if content is not None else None)
    return path


def _file(name: str) -> tarfile.TarInfo:
    return tarfile.TarInfo(name)


def test_the_bundle_unpacks_its_files_and_directories(tmp_path: Path) -> None:
    folder = tarfile.TarInfo("lib")
    folder.type = tarfile.DIRTYPE
    bundle = _tarball(
        tmp_path / "b.tar.gz",
        [folder, _file("lib/a.jar"), _file("run.jar")],
        {"lib/a.jar": b"a", "run.jar": b"r"},
    )
    dest = tmp_path / "out"
    dest.mkdir()

    registry.unpack(bundle, dest)

    assert (dest / "lib" / "a.jar").read_bytes() == b"a"
    assert (dest / "run.jar").read_bytes() == b"r"


@pytest.mark.parametrize(
    ("name", "kind", "says"),
    [
        ("../evil.jar", tarfile.REGTYPE, "unsafe path"),
        ("/etc/evil.jar", tarfile.REGTYPE, "unsafe path"),
        ("lib/link.jar", tarfile.SYMTYPE, "not a regular file"),
        ("lib/fifo", tarfile.FIFOTYPE, "not a regular file"),
    ],
)
def test_the_bundle_refuses_paths_that_leave_and_entries_that_are_not_files(
    tmp_path: Path, name: str, kind: bytes, says: str
) -> None:
    member = tarfile.TarInfo(name)
    member.type = kind
    if kind == tarfile.SYMTYPE:
        member.linkname = "/etc/passwd"
    bundle = _tarball(
        tmp_path / "b.tar.gz", [member], {name: b"x"} if kind == tarfile.REGTYPE else {}
    )
    dest = tmp_path / "out"
    dest.mkdir()

    with pytest.raises(ls.LocalError, match=says):
        registry.unpack(bundle, dest)
    assert not (tmp_path / "evil.jar").exists()


def test_the_registry_lock_pins_the_bundle_and_every_unpacked_file() -> None:
    bundle, files = registry.read_lock()

    assert bundle.path.endswith(f"apicurio-registry-app-{registry.APICURIO_VERSION}-all.tar.gz")
    assert registry.RUNNER_JAR in files
    assert all(path.startswith("lib/") for path in files if path != registry.RUNNER_JAR)


def test_the_kafka_lock_pins_the_broker_jar() -> None:
    names = {entry.file_name for entry in kafka.read_lock()}

    assert f"kafka_{kafka.SCALA_VERSION}-{kafka.KAFKA_VERSION}.jar" in names


def test_settings_come_from_the_service_prefix(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SCHEMA_REGISTRY_LOCAL_PORT", "18081")
    monkeypatch.setenv("SCHEMA_REGISTRY_LOCAL_START_TIMEOUT", "12")
    monkeypatch.setenv("SCHEMA_REGISTRY_LOCAL_CACHE_DIR", "/somewhere")

    settings = ls.load_settings(registry.SERVICE, None)

    assert settings.port == 18081
    assert settings.start_timeout == 12.0
    assert settings.cache_dir == Path("/somewhere")
    assert settings.state_dir.name == "schema-registry-18081"
    assert registry.address(settings) == "http://127.0.0.1:18081/apis/ccompat/v7"


@pytest.mark.parametrize(
    ("variable", "value", "says"),
    [
        ("KAFKA_LOCAL_PORT", "x", "KAFKA_LOCAL_PORT must be a port number"),
        ("KAFKA_LOCAL_PORT", "70000", "port must be between 1 and 65535"),
        ("KAFKA_LOCAL_STOP_TIMEOUT", "soon", "KAFKA_LOCAL_STOP_TIMEOUT must be a number"),
    ],
)
def test_a_bad_setting_is_named(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str, says: str
) -> None:
    monkeypatch.setenv(variable, value)

    with pytest.raises(ls.LocalError, match=says):
        ls.load_settings(kafka.SERVICE, None)


def test_kill_names_the_port_when_no_broker_of_ours_runs(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("KAFKA_LOCAL_STATE_ROOT", str(tmp_path))

    with pytest.raises(SystemExit) as stopped:
        kafka.main(["kill", "--port", "39999"])

    assert stopped.value.code == ls.EXIT_NOT_RUNNING
    assert "no broker of ours on port 39999" in capsys.readouterr().err


def test_a_start_over_kept_data_needs_a_kept_state(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("KAFKA_LOCAL_STATE_ROOT", str(tmp_path))

    with pytest.raises(SystemExit) as stopped:
        kafka.main(["start", "--keep-data", "--port", "39999"])

    assert stopped.value.code == ls.EXIT_ERROR
    assert "no kept state" in capsys.readouterr().err
    assert not (tmp_path / "kafka-39999").exists()  # nothing was formatted in its place


def test_a_kept_state_without_formatted_data_is_refused(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("KAFKA_LOCAL_STATE_ROOT", str(tmp_path))
    settings = ls.load_settings(kafka.SERVICE, 39999)
    (settings.state_dir / "data").mkdir(parents=True)
    (settings.state_dir / "server.properties").write_text("node.id=1\n", encoding="utf-8")
    (settings.state_dir / "log4j2.xml").write_text("<Configuration/>\n", encoding="utf-8")

    with pytest.raises(ls.LocalError, match=r"missing data/meta\.properties"):
        kafka.relaunch(settings, Path("java"))


def test_the_registry_keeps_no_data_to_start_over(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("SCHEMA_REGISTRY_LOCAL_STATE_ROOT", str(tmp_path))
    settings = ls.load_settings(registry.SERVICE, 39998)

    with pytest.raises(ls.LocalError, match="keeps no data"):
        ls.cmd_start(settings, registry.RUNNER, keep_data=True)

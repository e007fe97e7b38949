"""syncd.config: defaults, the example file, path resolution, precedence, rejections."""

from __future__ import annotations

import dataclasses
import os
import re
import socket
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from syncd import config
from syncd.config import load
from syncd.errors import ConfigError

REPO = Path(__file__).resolve().parent.parent
EXAMPLE = REPO / "config.example.toml"
SYNCD = Path(sys.executable).parent / "syncd"
LEARNER = "c8b02965e827a69fa3d876d554f55903"


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty working directory, and no syncd/systemd variables in os.environ."""
    for name in ("SYNCD_CONFIG", "SYNCD_SOCKET", "STATE_DIRECTORY", "RUNTIME_DIRECTORY"):
        monkeypatch.delenv(name, raising=False)
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    return cwd


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


# --- defaults and the example ----------------------------------------------------------


def test_defaults_without_a_file(workdir: Path) -> None:
    settings = load(None, env={})
    assert settings.source is None
    assert settings.device.name == socket.gethostname()
    assert settings.device.state_dir == workdir / ".syncd"
    assert settings.api.socket == workdir / ".syncd" / "api.sock"
    assert settings.api.accept_event_time is False
    assert settings.api.max_body_bytes == 1048576
    assert settings.api.group is None
    assert settings.sync.port == 7737
    assert settings.sync.peers == ()
    assert settings.sync.interval == 60.0 and isinstance(settings.sync.interval, float)
    assert settings.sync.subscription == "all"
    assert settings.sync.max_sessions == 4
    assert settings.discovery.enabled is True
    assert settings.store.cache_documents == 64
    assert settings.store.compact_after == 256
    assert settings.store.group_commit is True


def test_example_file_equals_the_defaults(monkeypatch: pytest.MonkeyPatch, workdir: Path) -> None:
    # The example's relative paths are relative to the repository, as the defaults are
    # to the working directory: from the repository root the two must be identical.
    monkeypatch.chdir(REPO)
    from_example = load(EXAMPLE, env={})
    assert from_example.source == EXAMPLE
    assert from_example == dataclasses.replace(load(None, env={}), source=EXAMPLE)


def test_example_file_documents_every_key() -> None:
    text = EXAMPLE.read_text()
    parsed = tomllib.loads(text)
    sections = {f.name: f.type for f in dataclasses.fields(config.Settings) if f.name != "source"}
    assert set(parsed) == set(sections)
    for section, cls in config._SECTIONS.items():
        for f in dataclasses.fields(cls):
            # Set to its default, except the keys whose default is the hostname or unset:
            # those are shown commented out.
            if f.name in ("name", "group"):
                assert re.search(rf"^# {f.name} = ", text, re.M), f"{section}.{f.name}"
            else:
                assert f.name in parsed[section], f"{section}.{f.name} not set in the example"
            assert re.search(rf"^# \S.*\n(#.*\n)*#? ?{f.name} = ", text, re.M), (
                f"{section}.{f.name} has no comment above it"
            )
            if f.name in parsed[section] and f.default is not dataclasses.MISSING:
                default = list(f.default) if isinstance(f.default, tuple) else f.default
                assert parsed[section][f.name] == default, f"{section}.{f.name}"


def test_settings_are_frozen(workdir: Path) -> None:
    settings = load(None, env={})
    with pytest.raises(dataclasses.FrozenInstanceError):
        settings.sync.port = 1  # type: ignore[misc]


# --- values that are accepted ------------------------------------------------------------


def test_a_full_file_is_read(workdir: Path, tmp_path: Path) -> None:
    path = write(
        tmp_path / "etc" / "syncd.toml",
        f"""
[device]
name = "teacher laptop"
state_dir = "/var/lib/syncd"
[api]
socket = "/run/syncd/api.sock"
accept_event_time = true
max_body_bytes = 1024
group = "syncd"
[sync]
port = 0
peers = ["school-server.local:7737", "192.168.1.10:7737", "[fe80::1]:7737", "server.:1"]
interval = 5
subscription = ["{{C8B02965-E827-A69F-A3D8-76D554F55903}}", "{LEARNER}", "urn:uuid:{'0' * 32}"]
max_sessions = 1
[discovery]
enabled = false
[store]
cache_documents = 1
compact_after = 1
group_commit = false
""",
    )
    s = load(path, env={})
    assert s.source == path
    assert s.device == config.DeviceSettings(name="teacher laptop", state_dir=Path("/var/lib/syncd"))
    assert s.api == config.ApiSettings(Path("/run/syncd/api.sock"), True, 1024, "syncd")
    assert s.sync.port == 0
    assert s.sync.peers == (
        "school-server.local:7737",
        "192.168.1.10:7737",
        "[fe80::1]:7737",
        "server.:1",
    )
    assert s.sync.interval == 5.0 and isinstance(s.sync.interval, float)
    # normalised to 32 lowercase hex, duplicates (in any spelling) once
    assert s.sync.subscription == (LEARNER, "0" * 32)
    assert s.sync.max_sessions == 1
    assert s.discovery.enabled is False
    assert s.store == config.StoreSettings(cache_documents=1, compact_after=1, group_commit=False)


def test_empty_file_is_the_defaults(workdir: Path, tmp_path: Path) -> None:
    path = write(tmp_path / "empty.toml", "")
    assert load(path, env={}) == dataclasses.replace(load(None, env={}), source=path)


def test_empty_subscription_list_is_allowed(workdir: Path, tmp_path: Path) -> None:
    path = write(tmp_path / "c.toml", "[sync]\nsubscription = []\n")
    assert load(path, env={}).sync.subscription == ()


# --- paths -------------------------------------------------------------------------------


def test_relative_paths_resolve_against_the_file(workdir: Path, tmp_path: Path) -> None:
    path = write(
        tmp_path / "conf" / "sub" / "syncd.toml",
        '[device]\nstate_dir = "data"\n[api]\nsocket = "../run/./api.sock"\n',
    )
    s = load(path, env={})
    assert s.device.state_dir == tmp_path / "conf" / "sub" / "data"
    assert s.api.socket == tmp_path / "conf" / "run" / "api.sock"


def test_a_relative_config_path_is_relative_to_the_working_directory(workdir: Path) -> None:
    write(workdir / "here" / "syncd.toml", '[device]\nstate_dir = "st"\n')
    s = load("here/syncd.toml", env={})
    assert s.source == workdir / "here" / "syncd.toml"
    assert s.device.state_dir == workdir / "here" / "st"
    # socket not set: it lives in the state dir
    assert s.api.socket == workdir / "here" / "st" / "api.sock"


def test_absolute_and_home_paths(
    workdir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    path = write(
        tmp_path / "c.toml",
        f'[device]\nstate_dir = "~/syncd"\n[api]\nsocket = "{tmp_path}/s/api.sock"\n',
    )
    s = load(path, env={})
    assert s.device.state_dir == tmp_path / "home" / "syncd"
    assert s.api.socket == tmp_path / "s" / "api.sock"


# --- precedence --------------------------------------------------------------------------


def test_explicit_path_beats_syncd_config(workdir: Path, tmp_path: Path) -> None:
    chosen = write(tmp_path / "chosen.toml", "[sync]\nport = 1\n")
    other = write(tmp_path / "other.toml", "[sync]\nport = 2\n")
    assert load(chosen, env={"SYNCD_CONFIG": str(other)}).sync.port == 1
    assert load(None, env={"SYNCD_CONFIG": str(other)}).sync.port == 2
    assert load(None, env={"SYNCD_CONFIG": str(other)}).source == other


def test_default_env_is_os_environ(workdir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SYNCD_CONFIG", str(write(tmp_path / "c.toml", "[sync]\nport = 3\n")))
    assert load().sync.port == 3


def test_syncd_socket_overrides_file_and_defaults(workdir: Path, tmp_path: Path) -> None:
    path = write(tmp_path / "c.toml", '[api]\nsocket = "/run/x/api.sock"\n')
    env = {"SYNCD_SOCKET": str(tmp_path / "env.sock")}
    assert load(path, env=env).api.socket == tmp_path / "env.sock"
    assert load(None, env=env).api.socket == tmp_path / "env.sock"
    # relative to the working directory
    assert load(None, env={"SYNCD_SOCKET": "rel.sock"}).api.socket == workdir / "rel.sock"


def test_systemd_directories_without_a_file(workdir: Path, tmp_path: Path) -> None:
    env = {"STATE_DIRECTORY": "/var/lib/syncd", "RUNTIME_DIRECTORY": "/run/syncd"}
    s = load(None, env=env)
    assert s.device.state_dir == Path("/var/lib/syncd")
    assert s.api.socket == Path("/run/syncd/api.sock")
    # several directories (StateDirectory=a b): the first one
    s = load(None, env={"STATE_DIRECTORY": "/var/lib/a:/var/lib/b"})
    assert s.device.state_dir == Path("/var/lib/a")
    assert s.api.socket == Path("/var/lib/a/api.sock")
    # SYNCD_SOCKET still wins over RUNTIME_DIRECTORY
    env["SYNCD_SOCKET"] = "/tmp/x.sock"
    assert load(None, env=env).api.socket == Path("/tmp/x.sock")


def test_a_file_beats_systemd_directories_key_by_key(workdir: Path, tmp_path: Path) -> None:
    env = {"STATE_DIRECTORY": "/var/lib/syncd", "RUNTIME_DIRECTORY": "/run/syncd"}
    both = write(tmp_path / "both.toml", '[device]\nstate_dir = "st"\n[api]\nsocket = "a.sock"\n')
    s = load(both, env=env)
    assert (s.device.state_dir, s.api.socket) == (tmp_path / "st", tmp_path / "a.sock")
    neither = write(tmp_path / "neither.toml", "[sync]\nport = 9\n")
    s = load(neither, env=env)
    assert (s.device.state_dir, s.api.socket) == (Path("/var/lib/syncd"), Path("/run/syncd/api.sock"))


# --- rejections --------------------------------------------------------------------------

BAD = [
    # (file text, key named, a fragment of what was expected)
    ("[nope]\n", "nope", "unknown section"),
    ("port = 7737\n", "port", "unknown section"),
    ("api = 1\n", "api", "expected a table"),
    ('[api]\nsockett = "x"\n', "api.sockett", "unknown key"),
    ("[device]\nnmae = 'x'\n", "device.nmae", "expected one of: name, state_dir"),
    ('[sync]\nport = "7737"\n', "sync.port", "expected an integer from 0 to 65535"),
    ("[api]\nmax_body_bytes = true\n", "api.max_body_bytes", "got the boolean true"),
    ("[sync]\nport = false\n", "sync.port", "expected an integer"),
    ("[discovery]\nenabled = 1\n", "discovery.enabled", "expected true or false"),
    ("[api]\naccept_event_time = 0\n", "api.accept_event_time", "expected true or false"),
    ('[store]\ngroup_commit = "yes"\n', "store.group_commit", "expected true or false"),
    ("[sync]\nport = 7737.0\n", "sync.port", "got the float 7737.0"),
    ("[sync]\nport = 65536\n", "sync.port", "from 0 to 65535, got 65536"),
    ("[sync]\nport = -1\n", "sync.port", "from 0 to 65535, got -1"),
    ("[api]\nmax_body_bytes = 1023\n", "api.max_body_bytes", ">= 1024"),
    ("[sync]\nmax_sessions = 0\n", "sync.max_sessions", ">= 1"),
    ("[store]\ncache_documents = 0\n", "store.cache_documents", ">= 1"),
    ("[store]\ncompact_after = 0\n", "store.compact_after", ">= 1"),
    ("[sync]\ninterval = 0\n", "sync.interval", "> 0"),
    ("[sync]\ninterval = -5.0\n", "sync.interval", "> 0"),
    ("[sync]\ninterval = nan\n", "sync.interval", "finite"),
    ("[sync]\ninterval = inf\n", "sync.interval", "finite"),
    ('[sync]\ninterval = "60"\n', "sync.interval", "number of seconds"),
    ("[sync]\ninterval = true\n", "sync.interval", "number of seconds"),
    ('[sync]\npeers = ["host"]\n', "sync.peers", "'host'"),
    ('[sync]\npeers = ["host:0"]\n', "sync.peers", "host:port"),
    ('[sync]\npeers = ["host:99999"]\n', "sync.peers", "host:port"),
    ('[sync]\npeers = [":7737"]\n', "sync.peers", "host:port"),
    ('[sync]\npeers = ["fe80::1:7737"]\n', "sync.peers", "[IPv6]"),
    ('[sync]\npeers = ["[nothex]:7737"]\n', "sync.peers", "host:port"),
    ('[sync]\npeers = ["bad_host:7737"]\n', "sync.peers", "host:port"),
    ('[sync]\npeers = ["1.2.3:7737"]\n', "sync.peers", "host:port"),
    ('[sync]\npeers = ["ok:1", "host: 2"]\n', "sync.peers", "item 1"),
    ('[sync]\npeers = "a:1"\n', "sync.peers", "expected an array"),
    ("[sync]\npeers = [7737]\n", "sync.peers", "got the integer 7737"),
    ('[sync]\nsubscription = "none"\n', "sync.subscription", '"all" or an array'),
    ('[sync]\nsubscription = "ALL"\n', "sync.subscription", '"all" or an array'),
    ('[sync]\nsubscription = ["not-a-uuid"]\n', "sync.subscription", "'not-a-uuid'"),
    ("[sync]\nsubscription = [5]\n", "sync.subscription", "learner id"),
    ("[sync]\nsubscription = 5\n", "sync.subscription", '"all" or an array'),
    ('[device]\nname = ""\n', "device.name", "non-empty name"),
    ("[device]\nname = 1\n", "device.name", "got the integer 1"),
    ('[device]\nname = "a\\nb"\n', "device.name", "control characters"),
    ("[device]\nstate_dir = 5\n", "device.state_dir", "expected a path"),
    ('[device]\nstate_dir = ""\n', "device.state_dir", "non-empty path"),
    ('[api]\ngroup = ""\n', "api.group", "group name"),
    ("[api]\ngroup = 0\n", "api.group", "group name"),
    (f'[api]\nsocket = "/{"s" * 120}.sock"\n', "api.socket", "at most 107 bytes"),
    # the socket defaults to <state_dir>/api.sock, which must fit too
    (f'[device]\nstate_dir = "/{"s" * 100}"\n', "api.socket", "at most 107 bytes"),
]


@pytest.mark.parametrize(("text", "key", "expected"), BAD, ids=[f"{k}:{t!r}"[:60] for t, k, _ in BAD])
def test_bad_values_name_file_key_and_expectation(
    workdir: Path, tmp_path: Path, text: str, key: str, expected: str
) -> None:
    path = write(tmp_path / "bad.toml", text)
    with pytest.raises(ConfigError) as info:
        load(path, env={})
    assert info.value.path == str(path)
    assert info.value.key == key
    assert expected in info.value.expected
    assert str(info.value).startswith(f"{path}: {key}: ")


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("[api\n", "line 1, column 5"),
        ('[api]\nsocket = "x"\nmax_body_bytes = \n', "line 3, column 18"),
        ("[sync]\nport = 1\nport = 2", "line 3"),
        ('[api]\nsocket = "unterminated\n', "line 2"),
    ],
)
def test_toml_syntax_error_names_file_and_line(
    workdir: Path, tmp_path: Path, text: str, key: str
) -> None:
    path = write(tmp_path / "syntax.toml", text)
    with pytest.raises(ConfigError) as info:
        load(path, env={})
    assert info.value.path == str(path)
    assert info.value.key.startswith(key)
    assert info.value.expected.startswith("expected valid TOML: ")


def test_non_utf8_file(workdir: Path, tmp_path: Path) -> None:
    path = tmp_path / "latin1.toml"
    path.write_bytes(b'[device]\nname = "caf\xe9"\n')
    with pytest.raises(ConfigError) as info:
        load(path, env={})
    assert (info.value.path, info.value.key) == (str(path), "line 2")


def test_missing_file_explicit_or_from_env(workdir: Path, tmp_path: Path) -> None:
    missing = tmp_path / "missing.toml"
    for kwargs in ({"path": missing, "env": {}}, {"path": None, "env": {"SYNCD_CONFIG": str(missing)}}):
        with pytest.raises(ConfigError) as info:
            load(**kwargs)
        assert info.value.path == str(missing)
        assert "readable" in info.value.expected


def test_too_long_syncd_socket_names_the_variable(workdir: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load(None, env={"SYNCD_SOCKET": "/" + "s" * 200})
    assert (info.value.path, info.value.key) == ("$SYNCD_SOCKET", "api.socket")


# --- through the real command ------------------------------------------------------------


def run_syncd(args: list[str], cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("SYNCD_", "NOTIFY_SOCKET"))}
    return subprocess.run(
        [str(SYNCD), *args], cwd=cwd, env={**clean, **env}, capture_output=True, text=True, timeout=60
    )


def test_cli_run_with_a_bad_config_exits_2(tmp_path: Path) -> None:
    bad = write(tmp_path / "bad.toml", "[sync]\nport = 70000\n")
    done = run_syncd(["run", "--config", str(bad)], tmp_path)
    assert done.returncode == 2, done.stderr
    assert done.stdout == ""
    assert f"syncd: config error: {bad}: sync.port: expected an integer from 0 to 65535" in done.stderr
    assert "Traceback" not in done.stderr
    assert not (tmp_path / ".syncd").exists()


def test_cli_run_with_a_bad_config_from_env_exits_2(tmp_path: Path) -> None:
    bad = write(tmp_path / "bad.toml", "[discovery]\nenabled = true\nmdns = 1\n")
    done = run_syncd(["run"], tmp_path, SYNCD_CONFIG=str(bad))
    assert done.returncode == 2, done.stderr
    assert f"{bad}: discovery.mdns: unknown key" in done.stderr


def test_cli_run_with_a_syntax_error_exits_2(tmp_path: Path) -> None:
    bad = write(tmp_path / "bad.toml", "[api]\nsocket = \n")
    done = run_syncd(["run", "--config", "bad.toml"], tmp_path)
    assert done.returncode == 2, done.stderr
    assert f"{bad}: line 2" in done.stderr

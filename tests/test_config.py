"""The configuration file (agh/settings.py, aghd/reload.py): strict
decoding that names the key and its line, the layers (flags over the
environment over the file over the defaults), live reload on an edit and
on SIGHUP, and ``agh config show`` / ``agh config check``.

The daemons here are subprocesses: the reload is driven by a real file
watcher and real signals, as a user's edit would be.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from typing import TYPE_CHECKING, Any

import pytest

from agh import errors
from agh.client import Client
from agh.settings import SETTINGS, Layers, Override, parse, read_file
from tests.helpers.cli import clean_environ, invoke
from tests.helpers.daemons import spawn_daemon, stop_process
from tests.helpers.store import StoreFile

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator


def config_error(text: str) -> errors.ConfigError:
    with pytest.raises(errors.ConfigError) as info:
        parse(text, "/x/config.yaml")
    return info.value


# -- strict decoding -------------------------------------------------------------------


def test_an_unknown_key_names_its_line_and_the_nearest_setting() -> None:
    err = config_error("default_lease_ms: 60000\n\nstuck_after: 5000\n")
    assert err.message.startswith("/x/config.yaml:3: unknown setting 'stuck_after'")
    assert "did you mean stuck_after_ms?" in err.message
    assert err.details == {"file": "/x/config.yaml", "key": "stuck_after", "line": 3}


@pytest.mark.parametrize(
    ("text", "line", "words"),
    [
        ("default_lease_ms: soon\n", 1, ["default_lease_ms", "Expected `int`", '"soon"']),
        ("# c\ndefault_lease_ms: 10\n", 2, ["default_lease_ms", ">= 1000", "300000"]),
        ("default_lease_ms: 60000.5\n", 1, ["Expected `int`, got `float`"]),
        (
            "synchronous: SOMETIMES\n",
            1,
            ["synchronous: expected one of FULL, EXTRA, NORMAL, OFF", "SOMETIMES"],
        ),
        ("allowed_uids: 1001\n", 1, ["allowed_uids", "Expected `array`"]),
        ("allowed_uids: [1001, -1]\n", 1, ["allowed_uids", ">= 0"]),
        ("integrity_check: maybe\n", 1, ["integrity_check", "Expected `bool`"]),
        ("idle_timeout_s:\n", 1, ["idle_timeout_s has no value", "delete the line"]),
        ("a: 1\nb: [\n", 3, ["not valid YAML"]),
        ("- default_lease_ms\n", 1, ["must be a mapping", "not a YAML list"]),
        ("log_level: info\nlog_level: debug\n", 2, ["set twice", "first on line 1"]),
        ("default_lease_ms: !!python/object:os.system x\n", 1, ["not a plain YAML value"]),
        ("allowed_uids: &a [*a]\n", 1, ["anchors and aliases", "write the value out"]),
        ("allowed_uids: &u [1]\nlog_level: *u\n", 1, ["anchors and aliases"]),
        ('log_level: "\\ud800"\n', 1, ["log_level:"]),
        ("db_path: agh.db\n", 1, ["db_path: 'agh.db' is relative", "absolute path"]),
        ("? [a, b]\n: 1\n", 1, ["must be a plain word, not a YAML list"]),
        ("event_retention_days: 10000000000000\n", 1, ["<= 36500"]),
        ("idle_timeout_s: .inf\n", 1, ["idle_timeout_s", "<= 31536000"]),
    ],
)
def test_a_bad_value_names_the_key_the_line_and_what_was_expected(
    text: str, line: int, words: list[str]
) -> None:
    err = config_error(text)
    assert err.message.startswith(f"/x/config.yaml:{line}: "), err.message
    for word in words:
        assert word in err.message, (word, err.message)


def test_values_decode_to_the_settings_types_and_choices_ignore_case() -> None:
    parsed = parse(
        "synchronous: normal\nlog_format: JSON\nallowed_uids: [1001]\n"
        "idle_timeout_s: 30\ndb_path: ~/hub.db\n",
        "f",
    )
    assert parsed.values == {
        "synchronous": "NORMAL",
        "log_format": "json",
        "allowed_uids": (1001,),
        "idle_timeout_s": 30.0,
        "db_path": os.path.expanduser("~/hub.db"),
    }
    assert parsed.lines["allowed_uids"] == 3
    assert parse("# only a comment\n", "f").values == {}


def test_every_setting_default_passes_its_own_check() -> None:
    for name, setting in SETTINGS.items():
        parsed = parse(json.dumps({name: _plain(setting.default())}), "f")
        assert parsed.values[name] == setting.default(), name


def _plain(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


def test_a_missing_default_file_means_defaults_but_a_named_one_is_an_error(
    short_dir: str,
) -> None:
    path = os.path.join(short_dir, "none.yaml")
    assert read_file(path, missing_ok=True).exists is False
    with pytest.raises(errors.ConfigError, match=r"no configuration file at .*none\.yaml"):
        Layers(path, explicit=True)


def test_a_billion_laughs_is_refused_at_once() -> None:
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, 10)]
    started = time.monotonic()
    err = config_error("\n".join(lines) + "\n")
    assert time.monotonic() - started < 1
    assert len(err.message) < 300, err.message


@pytest.mark.parametrize("kind", ["fifo", "device", "group-writable", "huge"])
def test_what_is_not_a_private_regular_file_is_refused_without_hanging(
    short_dir: str, kind: str
) -> None:
    path = os.path.join(short_dir, "config.yaml")
    if kind == "fifo":
        os.mkfifo(path)
    elif kind == "device":
        os.symlink("/dev/zero", path)
    else:
        write(path, "# x\n" * (100_000 if kind == "huge" else 1))
        if kind == "group-writable":
            os.chmod(path, 0o664)
    words = {
        "fifo": "not a regular file",
        "device": "not a regular file",
        "group-writable": "chmod go-w",
        "huge": "over 256 KiB",
    }[kind]
    with pytest.raises(errors.ConfigError, match=words):
        read_file(path)
    # A client looking for the socket (none runs in short_dir) reads past
    # such a file without hanging; the file's refusal is then the answer.
    env: dict[str, str | None] = {"AGH_CONFIG": path, "XDG_RUNTIME_DIR": short_dir}
    shown = invoke("config", "show", "--json", env=env)
    assert shown.exit_code == 1 and words in shown.stderr, shown.stderr


def test_a_client_finds_the_socket_a_half_broken_file_names(short_dir: str) -> None:
    path = os.path.join(short_dir, "config.yaml")
    write(path, "socket_path: /run/elsewhere/agh.sock  # moved\nstuck_after: 5\n")
    env = clean_environ(AGH_CONFIG=path)
    env.pop("AGH_SOCKET", None)
    proc = subprocess.run(
        [sys.executable, "-c", "from agh.settings import client_socket_path as c; print(c())"],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    assert proc.stdout.strip() == "/run/elsewhere/agh.sock"


# -- layers ---------------------------------------------------------------------------


def test_flags_hold_their_settings_over_the_file_even_across_a_reload(short_dir: str) -> None:
    path = os.path.join(short_dir, "c.yaml")
    write(path, "default_lease_ms: 60000\nstuck_after_ms: 5000\n")
    layers = Layers(path, overrides={"default_lease_ms": Override(2000, "flag --lease-ms")})
    assert layers.config.default_lease_ms == 2000
    assert layers.config.stuck_after_ms == 5000
    assert layers.sources["default_lease_ms"] == "flag --lease-ms"
    assert layers.sources["stuck_after_ms"] == f"file {path}:2"
    assert layers.sources["latency_window_ms"] == "default"
    write(path, "default_lease_ms: 90000\nsynchronous: NORMAL\n")
    result = layers.reload()
    assert layers.config.default_lease_ms == 2000
    # Removed from the file: back to its default.
    assert [(c.name, c.new) for c in result.applied] == [
        ("stuck_after_ms", SETTINGS["stuck_after_ms"].default())
    ]
    assert [(c.name, c.old, c.new) for c in result.pending] == [("synchronous", "FULL", "NORMAL")]
    assert layers.config.synchronous == "FULL"
    assert layers.pending == {"synchronous": "NORMAL"}
    # The same pending change is reported once, not at every reload.
    assert layers.reload().pending == []


# -- the daemon: live reload ----------------------------------------------------------


def write(path: str, text: str) -> None:
    """Replace the file as editors do: a new file renamed over the old one."""
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as fh:
        fh.write(text)
    os.replace(tmp, path)


def eventually(check: Callable[[], Any], timeout: float = 10.0) -> Any:
    """``check()``'s first truthy value within ``timeout`` seconds (the
    issue promises a reload "within a few seconds")."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(0.05)


class Hub:
    """A subprocess aghd reading ``config.yaml`` in its own directory."""

    def __init__(self, directory: str, text: str, *args: str) -> None:
        self.dir = directory
        self.config = os.path.join(directory, "config.yaml")
        self.socket = os.path.join(directory, "agh.sock")
        self.log = os.path.join(directory, "aghd.log")
        write(self.config, text)
        self.proc = spawn_daemon(
            self.socket,
            os.path.join(directory, "agh.db"),
            "--config",
            self.config,
            *args,
            level="INFO",
            log=self.log,
        )

    def setting(self, name: str) -> Any:
        with Client(self.socket) as c:
            return {s.name: s for s in c.server_config().settings}[name]

    def lease_ms_of_next_claim(self) -> int:
        with Client(self.socket) as c:
            c.tasks_create("work", start=True)
            claim = c.claim_next().claim
            assert claim is not None and claim.lease.heartbeat_at and claim.lease.lease_until
            start = dt.datetime.fromisoformat(claim.lease.heartbeat_at)
            until = dt.datetime.fromisoformat(claim.lease.lease_until)
            return round((until - start).total_seconds() * 1000)

    def logged(self, text: str, times: int = 1) -> bool:
        with open(self.log, encoding="utf-8") as fh:
            return fh.read().count(text) >= times

    def stop(self) -> int:
        status = stop_process(self.proc)
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        return status


@pytest.fixture
def hubs(short_dir: str) -> Iterator[Callable[..., Hub]]:
    started: list[Hub] = []

    def start(text: str, *args: str) -> Hub:
        started.append(Hub(short_dir, text, *args))
        return started[-1]

    yield start
    for hub in started:
        hub.stop()


def test_an_edit_changes_the_default_lease_of_the_next_claim_without_a_restart(
    hubs: Callable[..., Hub],
) -> None:
    hub = hubs("default_lease_ms: 60000\n")
    pid = hub.proc.pid
    assert hub.lease_ms_of_next_claim() == 60_000
    write(hub.config, "# longer leases\ndefault_lease_ms: 120000\n")
    assert eventually(lambda: hub.setting("default_lease_ms").value == 120_000)
    assert hub.lease_ms_of_next_claim() == 120_000
    assert hub.setting("default_lease_ms").source == f"file {hub.config}:2"
    assert hub.proc.pid == pid and hub.proc.poll() is None
    assert eventually(
        lambda: hub.logged(f"config reloaded from {hub.config}: default_lease_ms 60000 -> 120000")
    )


def test_an_invalid_edit_keeps_the_running_values_and_logs_why(
    hubs: Callable[..., Hub],
) -> None:
    hub = hubs("default_lease_ms: 60000\nstuck_after_ms: 5000\n")
    write(hub.config, "default_lease_ms: 90000\nstuck_after_msec: 1\n")
    assert eventually(lambda: hub.logged("unknown setting 'stuck_after_msec'"))
    assert hub.logged(f"{hub.config}:2: unknown setting 'stuck_after_msec'; did you mean")
    assert hub.logged("the running configuration is unchanged")
    # Nothing of the bad file applied, not even its valid line.
    assert hub.setting("default_lease_ms").value == 60_000
    assert hub.setting("stuck_after_ms").value == 5000
    assert hub.lease_ms_of_next_claim() == 60_000
    # Fixed again: applies.
    write(hub.config, "default_lease_ms: 90000\n")
    assert eventually(lambda: hub.setting("default_lease_ms").value == 90_000)


def test_hostile_edits_never_end_the_daemon(hubs: Callable[..., Hub]) -> None:
    hub = hubs("default_lease_ms: 60000\n")
    hostile = [
        "default_lease_ms: !!python/object/apply:os.system ['true']\n",
        "a: &a [*a, *a]\n",
        "\udcff".encode("utf-8", "surrogateescape").decode("latin-1") + "\x00\n",
        "default_lease_ms: 1" + "0" * 40 + "\n",
        "[" * 5000 + "\n",
    ]
    for n, text in enumerate(hostile, 1):
        write(hub.config, f"# {n}\n" + text)
        assert eventually(lambda n=n: hub.logged(f"{hub.config} changed: ", n)), n  # type: ignore[misc]
        hub.proc.send_signal(signal.SIGHUP)
        assert eventually(lambda n=n: hub.logged("SIGHUP: ", n)), n  # type: ignore[misc]
        assert hub.setting("default_lease_ms").value == 60_000, text
    # The file replaced by a directory, then removed: still serving.
    os.remove(hub.config)
    os.mkdir(hub.config)
    hub.proc.send_signal(signal.SIGHUP)
    os.rmdir(hub.config)
    hub.proc.send_signal(signal.SIGHUP)
    assert hub.proc.poll() is None
    assert hub.lease_ms_of_next_claim() == 60_000
    write(hub.config, "default_lease_ms: 80000\n")
    assert eventually(lambda: hub.setting("default_lease_ms").value == 80_000)


def test_the_watch_survives_its_directory_being_replaced(short_dir: str) -> None:
    """As a dotfile manager relinks ~/.config/agh: the directory removed,
    another put in its place; edits there still apply."""
    conf_dir = os.path.join(short_dir, "conf")
    os.mkdir(conf_dir)
    watched = os.path.join(conf_dir, "config.yaml")
    write(watched, "default_lease_ms: 60000\n")
    # The last --config wins: aghd reads conf/config.yaml, not the Hub's own.
    hub = Hub(short_dir, "", "--config", watched)
    try:
        write(watched, "default_lease_ms: 70000\n")
        assert eventually(lambda: hub.setting("default_lease_ms").value == 70_000)
        shutil.rmtree(conf_dir)
        elsewhere = os.path.join(short_dir, "dotfiles")
        os.mkdir(elsewhere)
        write(os.path.join(elsewhere, "config.yaml"), "default_lease_ms: 80000\n")
        os.symlink(elsewhere, conf_dir)
        assert eventually(lambda: hub.setting("default_lease_ms").value == 80_000)
        write(os.path.join(elsewhere, "config.yaml"), "default_lease_ms: 90000\n")
        assert eventually(lambda: hub.setting("default_lease_ms").value == 90_000)
    finally:
        hub.stop()


def test_a_setting_that_needs_a_restart_says_so_and_waits(hubs: Callable[..., Hub]) -> None:
    hub = hubs("synchronous: FULL\n")
    write(hub.config, "synchronous: NORMAL\n")
    assert eventually(lambda: hub.logged("synchronous FULL -> NORMAL needs a restart of aghd"))
    setting = hub.setting("synchronous")
    assert (setting.value, setting.pending, setting.restart) == ("FULL", "NORMAL", True)
    with Client(hub.socket) as c:
        assert c.server_info().synchronous == "FULL"


def test_a_flag_outranks_the_file_and_the_sources_say_so(hubs: Callable[..., Hub]) -> None:
    hub = hubs("default_lease_ms: 60000\n", "--lease-ms", "3000", "--set", "stuck_after_ms=7000")
    assert hub.lease_ms_of_next_claim() == 3000
    lease = hub.setting("default_lease_ms")
    assert (lease.value, lease.source) == (3000, "flag --lease-ms")
    stuck = hub.setting("stuck_after_ms")
    assert (stuck.value, stuck.source) == (7000, "flag --set stuck_after_ms")
    assert hub.setting("socket_path").source == "flag --socket"
    write(hub.config, "default_lease_ms: 90000\nlatency_window_ms: 60000\n")
    assert eventually(lambda: hub.setting("latency_window_ms").value == 60_000)
    assert hub.setting("default_lease_ms").value == 3000


def test_sighup_rereads_the_file(hubs: Callable[..., Hub]) -> None:
    hub = hubs("default_lease_ms: 60000\n")
    write(hub.config, "default_lease_ms: oops\n")
    assert eventually(lambda: hub.logged("changed: "))
    hub.proc.send_signal(signal.SIGHUP)
    assert eventually(lambda: hub.logged("SIGHUP: "))
    assert hub.logged(f"SIGHUP: {hub.config}:1: default_lease_ms: Expected `int`")
    assert hub.proc.poll() is None
    assert hub.setting("default_lease_ms").value == 60_000


def test_aghd_refuses_to_start_on_a_bad_file_naming_the_key_and_line(short_dir: str) -> None:
    path = os.path.join(short_dir, "config.yaml")
    write(path, "default_lease_ms: 60000\nmax_attempts: 3\n")
    proc = subprocess.run(
        [sys.executable, "-m", "aghd", "--config", path, "--socket", short_dir + "/s"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert proc.returncode == 1
    assert proc.stderr.startswith(f"aghd: {path}:2: unknown setting 'max_attempts'")
    assert "did you mean default_max_attempts?" in proc.stderr
    missing = subprocess.run(
        [sys.executable, "-m", "aghd", "--socket", short_dir + "/s"],
        capture_output=True,
        text=True,
        timeout=30,
        env=clean_environ(AGH_CONFIG=os.path.join(short_dir, "nope.yaml")),
    )
    assert missing.returncode == 1
    assert "no configuration file at" in missing.stderr and "nope.yaml" in missing.stderr


def test_set_takes_any_setting_and_rejects_a_bad_one_as_a_usage_error(short_dir: str) -> None:
    def aghd(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "aghd", "--socket", short_dir + "/s", *args, "--check"],
            capture_output=True,
            text=True,
            timeout=30,
            env=clean_environ(AGH_DB=os.path.join(short_dir, "none.db")),
        )

    bad = aghd("--set", "stuck_after=5")
    assert bad.returncode == 2
    assert "unknown setting 'stuck_after'; did you mean stuck_after_ms?" in bad.stderr
    worse = aghd("--set", "allowed_uids=[a]")
    assert worse.returncode == 2 and "allowed_uids" in worse.stderr
    # A good --set passes the option check and reaches --check (no database: 1).
    fine = aghd("--set", "allowed_uids=[1001, 1002]", "--set", "log_format=json")
    assert fine.returncode == 1 and "no database at" in fine.stderr


def test_check_still_checks_the_database_when_the_config_file_is_bad(short_dir: str) -> None:
    config = os.path.join(short_dir, "config.yaml")
    write(config, "stuck_after: 5\n")
    db = os.path.join(short_dir, "agh.db")
    StoreFile(db).close()
    proc = subprocess.run(
        [sys.executable, "-m", "aghd", "--config", config, "--db", db, "--check"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert (
        "unknown setting 'stuck_after'" in proc.stderr
        and "checking without the file" in proc.stderr
    )
    assert proc.stdout.startswith(f"{db}: ok, schema version")


# -- agh config show / check ----------------------------------------------------------


def test_config_check_exits_non_zero_naming_key_and_line(short_dir: str) -> None:
    path = os.path.join(short_dir, "c.yaml")
    write(path, "default_lease_ms: 60000\nretry_backoff_cap_ms: -1\n")
    result = invoke("config", "check", path)
    assert result.exit_code == 1
    assert result.stderr.startswith(f"agh: {path}:2: retry_backoff_cap_ms: Expected `int` >= 0")
    write(path, "default_lease_ms: 60000\n")
    ok = invoke("config", "check", path)
    assert ok.exit_code == 0, ok.stderr
    assert ok.stdout.splitlines()[0] == f"{path}: ok, sets 1 setting(s)"
    as_json = invoke("config", "check", path, "--json")
    assert json.loads(as_json.stdout)["settings"] == {"default_lease_ms": 60000}
    assert invoke("config", "check", os.path.join(short_dir, "none.yaml")).exit_code == 1


def test_config_show_reads_the_running_daemon_else_the_file(hubs: Callable[..., Hub]) -> None:
    hub = hubs("stuck_after_ms: 5000\n")
    live = invoke("--socket", hub.socket, "config", "show", "--json")
    assert live.exit_code == 0, live.stderr
    doc = json.loads(live.stdout)
    assert doc["running"] is True and doc["file"] == hub.config
    by_name = {s["name"]: s for s in doc["settings"]}
    assert set(by_name) == set(SETTINGS)
    assert by_name["stuck_after_ms"]["source"] == f"file {hub.config}:1"
    table = invoke("--socket", hub.socket, "config", "show")
    assert any(
        line.split()[:2] == ["stuck_after_ms", "5000"] for line in table.stdout.splitlines()
    ), table.stdout
    hub.stop()
    offline = invoke(
        "--socket", hub.socket, "config", "show", "--json", env={"AGH_CONFIG": hub.config}
    )
    assert offline.exit_code == 0, offline.stderr
    doc = json.loads(offline.stdout)
    assert doc["running"] is False
    assert {s["name"]: s["value"] for s in doc["settings"]}["stuck_after_ms"] == 5000


def test_relative_paths_on_the_command_line_are_taken_from_its_directory(short_dir: str) -> None:
    StoreFile(os.path.join(short_dir, "here.db")).close()
    proc = subprocess.run(
        [sys.executable, "-m", "aghd", "--db", "here.db", "--check"],
        capture_output=True,
        text=True,
        timeout=30,
        cwd=short_dir,
        env=clean_environ(),
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith(os.path.join(short_dir, "here.db") + ": ok")

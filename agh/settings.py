"""The daemon's settings: every name, its type, default, bounds, whether a
change needs a restart, and the configuration file that sets them.

Each setting comes from the first of: a flag or ``--set`` (or the
environment variable a flag reads: ``$AGH_SOCKET``, ``$AGH_DB``), the
configuration file, the default. ``Layers`` keeps the effective ``Config``
and where each value came from; ``Layers.reload()`` reads the file again
and changes the live settings in place, leaving the ones a flag holds and
the ones that need a restart as they are (aghd/reload.py watches the file
and calls it).

Shared by the daemon and the client: ``agh config show`` (with no daemon)
and ``agh config check`` read the same file the same way, and
clients find the socket through ``client_socket_path`` so they agree with
the daemon on it. The file is YAML, a mapping of setting names to values,
decoded strictly: an unknown key, a wrong type, a value out of bounds, a
duplicate key or a syntax error is a ``ConfigError`` naming the file, the
key and its line. Must not: import aghd, or yaml at module level (``agh
--help`` stays light).
"""

from __future__ import annotations

import difflib
import os
from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING, Annotated, Any, Literal

import msgspec

from agh.errors import ConfigError

if TYPE_CHECKING:
    from collections.abc import Callable

    from agh import protocol as p

CONFIG_NAME = "config.yaml"

# The observe.dashboard thresholds' defaults (the rules: aghd/health.py).
STUCK_AFTER_MS = 600_000
BACKLOG_THRESHOLD_MS = 300_000
STALE_AFTER_MS = 600_000
LATENCY_WINDOW_MS = 3_600_000

Synchronous = Literal["FULL", "EXTRA", "NORMAL", "OFF"]
LogLevel = Literal["DEBUG", "INFO", "WARNING", "ERROR"]
# auto: journal when stderr is the systemd journal (JOURNAL_STREAM), else text.
LogFormat = Literal["auto", "text", "journal", "json"]
CHOICES = (Synchronous, LogLevel, LogFormat)

# Upper bounds keep every value inside what SQLite's 64-bit integers and the
# event loop's timers take (a year of seconds, some 30 years of
# milliseconds), so no edit can make arithmetic on a setting overflow.
Ms = Annotated[int, msgspec.Meta(ge=0, le=10**12)]
Seconds = Annotated[float, msgspec.Meta(gt=0, le=31_536_000)]
Count = Annotated[int, msgspec.Meta(ge=1, le=10**12)]
Days = Annotated[int, msgspec.Meta(ge=0, le=36_500)]
Path = Annotated[str, msgspec.Meta(min_length=1)]


def _setting(
    default: Any = None,
    kind: Any = None,
    *,
    restart: bool = False,
    factory: Callable[[], Any] | None = None,
) -> Any:
    """A Config field: ``kind`` is the type a file value is decoded to
    (bounds included); ``restart`` says a change applies only at the next
    start."""
    meta = {"kind": kind, "restart": restart}
    if factory is not None:
        return field(default_factory=factory, metadata=meta)
    return field(default=default, metadata=meta)


def _socket() -> str:
    # The built-in default: $AGH_SOCKET is a layer above the file (aghd.main).
    from agh.paths import builtin_socket_path

    return builtin_socket_path()


def _db() -> str:
    # The environment ($AGH_DB, $AGH_SOCKET) is a layer of its own, above the file.
    from agh.paths import builtin_db_path

    return builtin_db_path()


@dataclass(slots=True)
class Config:
    """The daemon's effective settings. A live reload changes the fields
    whose ``restart`` is false in place, so code reads ``config.<name>`` at
    the time it needs it and never keeps a copy."""

    # Paths (PROTOCOL §1): $AGH_SOCKET / $AGH_DB, else the user runtime and state dirs.
    socket_path: str = _setting(kind=Path, restart=True, factory=_socket)
    db_path: str = _setting(kind=Path, restart=True, factory=_db)
    # FULL: a commit is on disk before the reply leaves (PROTOCOL §8).
    synchronous: str = _setting("FULL", Synchronous, restart=True)
    # Check the database's structure (PRAGMA quick_check) before serving it:
    # a damaged file is refused at start rather than failing requests later.
    integrity_check: bool = _setting(True, bool, restart=True)
    # How long a write waits for another program's lock on the database
    # before the client gets ``busy``.
    busy_timeout_ms: int = _setting(5000, Ms, restart=True)
    # A claim's lease when it names none (PROTOCOL §6: at most 24 h).
    default_lease_ms: int = _setting(300_000, Annotated[int, msgspec.Meta(ge=1000, le=86_400_000)])
    default_max_attempts: int = _setting(1, Annotated[int, msgspec.Meta(ge=1, le=1000)])
    retry_backoff_base_ms: int = _setting(1_000, Ms)
    retry_backoff_cap_ms: int = _setting(300_000, Ms)
    # Active claims one session may hold (0: unlimited).
    max_claims_per_session: int = _setting(1, Ms)
    max_line_bytes: int = _setting(1 << 20, Annotated[int, msgspec.Meta(ge=1024)])
    # Requests one connection may have in flight before we stop reading it,
    # and the bytes of their request lines (one request is always admitted).
    max_inflight_per_connection: int = _setting(256, Count)
    max_inflight_bytes_per_connection: int = _setting(4 << 20, Count)
    # Open connections at most (0: from the descriptor limit, at most 4096).
    # At the limit the longest-idle one is closed; with none idle, refused.
    max_connections: int = _setting(0, Ms, restart=True)
    # A connection with nothing in flight and no subscription is closed after
    # this long (the client reconnects on its next call).
    idle_timeout_s: float = _setting(600.0, Seconds)
    # A connection whose replies sit unsent (the client reads none) this long
    # is cut off and its buffered output dropped.
    write_stall_timeout_s: float = _setting(60.0, Seconds)
    # uids besides our own that may connect (SO_PEERCRED).
    allowed_uids: tuple[int, ...] = _setting((), tuple[Annotated[int, msgspec.Meta(ge=0)], ...])
    # The reaper never sleeps longer than this, as a safety net.
    reaper_max_sleep_s: float = _setting(5.0, Seconds, restart=True)
    # Seconds to let in-flight requests finish on SIGTERM.
    shutdown_grace_s: float = _setting(10.0, Seconds)
    use_uvloop: bool = _setting(True, bool, restart=True)
    # Read connections (and threads) serving reads side by side.
    read_connections: int = _setting(2, Annotated[int, msgspec.Meta(ge=1, le=64)], restart=True)
    # Streams (PROTOCOL §7): a keepalive when nothing else was sent for this
    # long; a subscriber whose unsent notifications exceed the byte limit is
    # dropped with "overflow" instead of growing the daemon's memory.
    stream_keepalive_s: float = _setting(15.0, Seconds, restart=True)
    stream_max_backlog_bytes: int = _setting(1 << 20, Count, restart=True)
    # Run logs kept per run (agent.log); older lines are deleted.
    log_retention_lines: int = _setting(10_000, Count)
    # Events and run log lines of closed tasks older than this many days are
    # deleted (0: kept forever, the default: the timeline is the history).
    event_retention_days: int = _setting(0, Days)
    log_retention_days: int = _setting(0, Days)
    # -- observe.dashboard thresholds (rules: aghd/health.py) --
    # An active run whose agent showed no life (claim, start, heartbeat) this long is stuck.
    stuck_after_ms: int = _setting(STUCK_AFTER_MS, Count)
    # The queue is backlogged when its oldest run waited this long (4x: critical).
    backlog_threshold_ms: int = _setting(BACKLOG_THRESHOLD_MS, Count)
    # Live work with no activity at all for this long makes the dashboard stale.
    stale_after_ms: int = _setting(STALE_AFTER_MS, Count)
    # Claim and start latencies cover the runs claimed within this window.
    latency_window_ms: int = _setting(LATENCY_WINDOW_MS, Count)
    # -- the daemon's own log (stderr) --
    log_level: str = _setting("INFO", LogLevel)
    log_format: str = _setting("auto", LogFormat)


@dataclass(frozen=True, slots=True)
class Setting:
    name: str
    kind: Any
    restart: bool

    def default(self) -> Any:
        """The default, computed now (the paths read the environment)."""
        return getattr(Config(), self.name)


SETTINGS: dict[str, Setting] = {
    f.name: Setting(f.name, f.metadata["kind"], f.metadata["restart"]) for f in fields(Config)
}


def default_config_path() -> str:
    """``$AGH_CONFIG``, else ``<user config dir>/agh/config.yaml``
    (``~/.config/agh/config.yaml``)."""
    env = os.environ.get("AGH_CONFIG")
    if env:
        return env
    import platformdirs

    return os.path.join(platformdirs.user_config_dir("agh"), CONFIG_NAME)


@dataclass(frozen=True, slots=True)
class FileSettings:
    """What a configuration file sets: each value and the line it is on."""

    path: str
    values: dict[str, Any]
    lines: dict[str, int]
    exists: bool = True

    def where(self, name: str) -> str:
        """``PATH:LINE`` of setting ``name``."""
        return f"{self.path}:{self.lines[name]}"


def read_file(path: str, *, missing_ok: bool = False) -> FileSettings:
    """Read and decode the configuration file at ``path``; with
    ``missing_ok``, a file that does not exist sets nothing.

    Raises ConfigError (with ``details`` file, key and line where one is at
    fault) on a missing or unreadable file, invalid YAML, a top level that
    is not a mapping, a duplicate or unknown key, or a bad value.
    """
    try:
        text = _read_text(path)
    except FileNotFoundError:
        if missing_ok:
            return FileSettings(path, {}, {}, exists=False)
        raise ConfigError(
            f"no configuration file at {path}; create it, or point --config or "
            "$AGH_CONFIG at the right one",
            {"file": path},
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read {path}: {exc}", {"file": path}) from None
    return parse(text, path)


# Far above any real file (the whole table is some 40 lines); a bound so a
# file that is not one (a link to /dev/zero, a log) cannot fill memory.
MAX_FILE_BYTES = 256 * 1024


def _read_text(path: str) -> str:
    """The text of the file at ``path``, which must be a regular file of
    ours that no one else may write (it can set ``allowed_uids``) and of at
    most MAX_FILE_BYTES; raises OSError (ConfigError for a refusal)."""
    import stat

    # O_NONBLOCK: a FIFO put there must not hang whoever reads it.
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    with open(fd, "rb") as fh:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise ConfigError(
                f"{path} is not a regular file; point --config at one", {"file": path}
            )
        if st.st_uid not in (os.geteuid(), 0) or st.st_mode & 0o022:
            raise ConfigError(
                f"{path} can be changed by another user (owner uid {st.st_uid}, mode "
                f"{stat.S_IMODE(st.st_mode):o}), and it says who may connect to aghd; "
                f"make it yours and not writable by others: chmod go-w {path}",
                {"file": path},
            )
        data = fh.read(MAX_FILE_BYTES + 1)
    if len(data) > MAX_FILE_BYTES:
        raise ConfigError(
            f"{path} is over {MAX_FILE_BYTES // 1024} KiB: not a configuration file",
            {"file": path},
        )
    return data.decode("utf-8")


def parse(text: str, path: str) -> FileSettings:
    """Decode configuration ``text`` read from ``path`` (see ``read_file``)."""
    import yaml

    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else None
        where = f"{path}:{line}" if line else path
        raise ConfigError(
            f"{where}: not valid YAML: {exc.problem or exc.context}",
            {"file": path, "line": line},
        ) from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}", {"file": path}) from None
    if root is None:  # an empty file, or only comments: every default
        return FileSettings(path, {}, {})
    if not isinstance(root, yaml.MappingNode):
        line = root.start_mark.line + 1
        raise ConfigError(
            f"{path}:{line}: the file must be a mapping of setting names to values "
            "(`default_lease_ms: 60000`), not a YAML "
            + ("list" if isinstance(root, yaml.SequenceNode) else "scalar"),
            {"file": path, "line": line},
        )
    _refuse_aliases(root, path)
    constructor = yaml.SafeLoader("")
    values: dict[str, Any] = {}
    lines: dict[str, int] = {}
    for key_node, value_node in root.value:
        line = key_node.start_mark.line + 1
        key = key_node.value if isinstance(key_node, yaml.ScalarNode) else None
        details = {"file": path, "key": key, "line": line}
        if key is None:
            raise ConfigError(
                f"{path}:{line}: a setting name must be a plain word, not a YAML "
                + ("list" if isinstance(key_node, yaml.SequenceNode) else "mapping"),
                details,
            )
        if key not in SETTINGS:
            raise ConfigError(f"{path}:{line}: {unknown_setting(key)}", details)
        if key in lines:
            raise ConfigError(
                f"{path}:{line}: {key} is set twice (first on line {lines[key]}); keep one",
                details,
            )
        try:
            raw = constructor.construct_object(value_node, deep=True)
        except yaml.YAMLError as exc:  # a tag such as !!python/object, a recursive alias
            problem = getattr(exc, "problem", None) or exc
            raise ConfigError(
                f"{path}:{line}: {key}: not a plain YAML value ({problem})", details
            ) from None
        values[key] = decode(key, raw, f"{path}:{line}: ", details)
        lines[key] = line
    return FileSettings(path, values, lines)


def _refuse_aliases(root: Any, path: str) -> None:
    """No setting needs YAML anchors and aliases (``&a``, ``*a``), and a few
    nested ones make a value of billions of items: refuse any node the
    file uses twice."""
    import yaml

    seen: set[int] = set()
    stack = [root]
    while stack:
        node = stack.pop()
        if id(node) in seen:
            line = node.start_mark.line + 1
            raise ConfigError(
                f"{path}:{line}: YAML anchors and aliases (&name, *name) are not "
                "allowed in a configuration file; write the value out",
                {"file": path, "line": line},
            )
        seen.add(id(node))
        if isinstance(node, yaml.SequenceNode):
            stack.extend(node.value)
        elif isinstance(node, yaml.MappingNode):
            for k, v in node.value:
                stack.extend((k, v))


def decode(key: str, raw: Any, where: str = "", details: dict[str, Any] | None = None) -> Any:
    """``raw`` as setting ``key``'s type, bounds checked.

    Raises ConfigError saying what was expected.
    """
    setting = SETTINGS[key]
    if raw is None:
        raise ConfigError(
            f"{where}{key} has no value; give one, or delete the line for the default "
            f"({_show(setting.default())})",
            details,
        )
    if isinstance(raw, str) and setting.kind in CHOICES:
        # Choices are matched without regard to case, as the flags are.
        canonical = {c.lower(): c for c in setting.kind.__args__}
        raw = canonical.get(raw.lower(), raw)
    try:
        value = msgspec.convert(raw, setting.kind, strict=True)
    except (msgspec.ValidationError, UnicodeError, ValueError, TypeError) as exc:
        # UnicodeError: a lone surrogate ("\ud800") in a YAML string.
        problem = str(exc).split(" - at `", 1)[0]
        if setting.kind in CHOICES:
            problem = "expected one of " + ", ".join(setting.kind.__args__)
        raise ConfigError(
            f"{where}{key}: {problem} (got {_show(raw)}; default {_show(setting.default())})",
            details,
        ) from None
    if isinstance(value, list):
        return tuple(value)
    if setting.kind is Path:
        value = os.path.expanduser(value)
        if not os.path.isabs(value):
            # Each process would resolve it against its own directory:
            # aghd under systemd and a client in a shell would disagree.
            raise ConfigError(
                f"{where}{key}: {value!r} is relative; give an absolute path (or ~/...)", details
            )
    return value


def unknown_setting(key: str) -> str:
    near = difflib.get_close_matches(key, SETTINGS, n=1, cutoff=0.6)
    hint = f"did you mean {near[0]}? " if near else ""
    return f"unknown setting {key!r}; {hint}`agh config show` lists every setting"


def _show(value: Any, limit: int = 120) -> str:
    """``value`` as JSON for a message, cut at ``limit`` characters."""
    if isinstance(value, tuple):
        value = list(value)
    try:
        text = msgspec.json.encode(value).decode()
    except (TypeError, ValueError, UnicodeError):
        text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def show_value(value: Any) -> str:
    """A setting's value as ``agh config show`` and aghd's log print it."""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(map(str, value)) + "]"
    return str(value)


def client_socket_path() -> str:
    """Where a client looks for aghd: ``$AGH_SOCKET``, else the
    configuration file's ``socket_path``, else ``<runtime dir>/agh.sock``.
    Cheap when the file does not exist or does not mention the socket
    (every agh command asks). A file aghd would refuse for another line
    still names the socket aghd may be serving (it keeps running on a bad
    edit), so that one line is read on its own; nothing here raises."""
    from agh.paths import default_socket_path

    if os.environ.get("AGH_SOCKET"):
        return default_socket_path()
    path = default_config_path()
    try:
        text = _read_text(path)
    except (OSError, UnicodeDecodeError, ConfigError):
        text = ""
    if "socket_path" in text:
        try:
            value = parse(text, path).values.get("socket_path")
        except ConfigError:
            value = _socket_line(text)
        if isinstance(value, str):
            return value
    return default_socket_path()


def _socket_line(text: str) -> str | None:
    """``socket_path: VALUE`` read from its line alone (see above)."""
    import re

    found = re.search(r"^socket_path:[ \t]*([^#\n]+?)[ \t]*(?:#.*)?$", text, flags=re.M)
    if found is None:
        return None
    value = os.path.expanduser(found.group(1).strip("'\""))
    return value if os.path.isabs(value) else None


# -- layers: flags over the file over the defaults ---------------------------------

DEFAULT = "default"


@dataclass(frozen=True, slots=True)
class Override:
    """A value set on the command line, and how (``flag --lease-ms``,
    ``env AGH_DB``, ``flag --set default_lease_ms``)."""

    value: Any
    source: str


@dataclass(frozen=True, slots=True)
class Change:
    name: str
    old: Any
    new: Any


@dataclass(frozen=True, slots=True)
class Reloaded:
    """What a reload did: the changes applied, and those that wait for a
    restart (the running value stays)."""

    applied: list[Change] = field(default_factory=list)
    pending: list[Change] = field(default_factory=list)


class Layers:
    """The effective configuration and the source of every value."""

    def __init__(
        self,
        path: str | None = None,
        *,
        explicit: bool = False,
        overrides: dict[str, Override] | None = None,
        config: Config | None = None,
    ) -> None:
        """Read the file at ``path`` (default: ``agh.settings.default_config_path()``;
        none at all when ``config`` is given, as in-process tests do).
        ``explicit``: the user named the file, so a missing one is an error.

        Raises ConfigError for a file that cannot be used.
        """
        self.overrides = dict(overrides or {})
        self.explicit = explicit
        self.pending: dict[str, Any] = {}
        if config is not None and path is None:
            self.path: str | None = None
            self.file = FileSettings("", {}, {}, exists=False)
            self.config = config
            self.sources = {name: DEFAULT for name in SETTINGS}
            return
        self.path = os.path.abspath(os.path.expanduser(path or default_config_path()))
        self.file = read_file(self.path, missing_ok=not explicit)
        self.config = Config(**self._wanted(self.file))
        self.sources = {name: self._source(name, self.file) for name in SETTINGS}

    def _wanted(self, file: FileSettings) -> dict[str, Any]:
        """The values set by flags or ``file``; the rest are defaults."""
        wanted = dict(file.values)
        wanted.update({name: o.value for name, o in self.overrides.items()})
        return wanted

    def _source(self, name: str, file: FileSettings) -> str:
        if name in self.overrides:
            return self.overrides[name].source
        if name in file.values:
            return f"file {file.where(name)}"
        return DEFAULT

    def reload(self) -> Reloaded:
        """Read the file again and apply what changed.

        Raises ConfigError (the running configuration unchanged) when the
        file cannot be used; a missing default file means every default.
        """
        if self.path is None:
            return Reloaded()
        file = read_file(self.path, missing_ok=not self.explicit)
        defaults = Config()
        wanted = self._wanted(file)
        result = Reloaded()
        pending: dict[str, Any] = {}
        for name, setting in SETTINGS.items():
            if name in self.overrides:
                continue  # a flag holds it, whatever the file says
            new = wanted[name] if name in wanted else getattr(defaults, name)
            old = getattr(self.config, name)
            if new == old:
                self.sources[name] = self._source(name, file)
                continue
            if setting.restart:
                pending[name] = new
                if self.pending.get(name) != new:
                    result.pending.append(Change(name, old, new))
                continue
            setattr(self.config, name, new)
            self.sources[name] = self._source(name, file)
            result.applied.append(Change(name, old, new))
        self.file = file
        self.pending = pending
        return result

    def hold(self, name: str, value: Any, source: str) -> None:
        """Set ``name`` as a flag would, from ``source``: a reload leaves it."""
        setattr(self.config, name, value)
        self.overrides[name] = Override(value, source)
        self.sources[name] = source

    def wire(self) -> p.ServerConfigResult:
        """Every setting, its value, its source, whether a change needs a
        restart and the value waiting for one, as ``server.config`` returns
        them."""
        from agh import protocol

        return protocol.ServerConfigResult(
            file=self.path,
            file_exists=self.file.exists,
            settings=[
                protocol.ConfigSetting(
                    name=name,
                    value=getattr(self.config, name),
                    source=self.sources[name],
                    restart=setting.restart,
                    pending=self.pending.get(name),
                )
                for name, setting in SETTINGS.items()
            ],
        )

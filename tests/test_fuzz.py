"""Fuzzing the socket: random requests for every method, hostile bytes and
hostile clients (PROTOCOL.md §1, §2).

Owns: property-based requests of random shape against every method in the
registry, garbage and deeply nested input, oversize lines, abandoned
connections, many idle connections, slow-loris and never-reading clients.
Must not: repeat the fixed conformance cases of test_jsonrpc.py and
test_errors.py; it checks the invariants that hold for *any* input instead —
every request with an id gets exactly one well-formed reply carrying that id,
no error is ever ``internal`` (-32603: a bug), and the daemon stays alive.
"""

from __future__ import annotations

import contextlib
import gc
import json
import os
import resource
import shutil
import socket
import tempfile
import threading
import time
import warnings
from collections import Counter
from typing import TYPE_CHECKING, Any

import msgspec
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

import aghd.handlers  # noqa: F401  (registers every method)
from aghd.rpc import REGISTRY
from tests.helpers.daemons import ThreadDaemon, make_config, spawn_daemon, stop_process
from tests.helpers.wire import RawConn

if TYPE_CHECKING:
    from collections.abc import Iterator

# When a test kills the in-process daemon, the sockets it held are closed by
# the garbage collector during some later test: that test must not fail for
# it (the one that killed the daemon already did).
pytestmark = pytest.mark.filterwarnings(
    "ignore::ResourceWarning", "ignore::pytest.PytestUnraisableExceptionWarning"
)

# Codes PROTOCOL §2 allows, with their data.kind; -32603 is deliberately absent.
KINDS = {
    -32700: "parse_error",
    -32600: "invalid_request",
    -32601: "method_not_found",
    -32602: "invalid_params",
    -32004: "not_found",
    -32009: "conflict",
    -32010: "lease_lost",
    -32003: "forbidden",
    -32029: "busy",
}
METHODS = sorted(REGISTRY)
# AGH_FUZZ_EXAMPLES=5000 for a long local run; the default keeps CI bounded.
EXAMPLES = int(os.environ.get("AGH_FUZZ_EXAMPLES", "300"))
# No explain phase: on Python 3.11 its source analysis can crash pytest
# ("AST constructor recursion depth mismatch") instead of reporting a failure.
FUZZ = settings(
    max_examples=EXAMPLES,
    phases=[Phase.explicit, Phase.reuse, Phase.generate, Phase.target, Phase.shrink],
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


def _line(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode() + b"\n"


def _check_error(reply: dict[str, Any]) -> None:
    """A valid JSON-RPC error object with a §2 code and data.kind/details."""
    error = reply["error"]
    assert "result" not in reply, reply
    assert isinstance(error, dict), reply
    assert error.get("code") != -32603, f"internal error (a daemon bug): {reply}"
    assert error.get("code") in KINDS, f"code outside PROTOCOL §2: {reply}"
    assert isinstance(error.get("message"), str) and error["message"], reply
    data = error.get("data")
    assert isinstance(data, dict), reply
    assert data.get("kind") == KINDS[error["code"]], reply
    assert isinstance(data.get("details"), dict), reply


def _check_reply(reply: Any) -> None:
    assert isinstance(reply, dict), reply
    assert reply.get("jsonrpc") == "2.0", reply
    assert "id" in reply, reply
    assert ("result" in reply) != ("error" in reply), reply
    if "error" in reply:
        _check_error(reply)


def _alive(path: str, timeout: float = 5) -> None:
    """server.info on a fresh connection answers: the daemon survived."""
    conn = RawConn(path, timeout=timeout)
    try:
        conn.request("server.info", {}, id="alive")
        reply = conn.recv()
        assert reply["id"] == "alive" and reply["result"]["protocol"] == 1, reply
    finally:
        conn.close()


def _call(path: str, method: str, params: dict[str, Any]) -> Any:
    """One request on a fresh raw connection; its result (the real client is
    not used, so these tests depend on the daemon only)."""
    conn = RawConn(path)
    try:
        conn.request(method, params, id="call")
        while True:
            reply = conn.recv()
            if reply.get("id") == "call":
                break
    finally:
        conn.close()
    assert "result" in reply, reply
    return reply["result"]


def _closed_by_peer(conn: RawConn, timeout: float = 5) -> bool:
    conn.sock.settimeout(timeout)
    try:
        while True:
            chunk = conn.sock.recv(65536)
            if not chunk:
                return True
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False


def _raise_fd_limit(needed: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < needed:
        if hard != resource.RLIM_INFINITY and hard < needed:
            pytest.skip(f"needs {needed} descriptors, hard limit is {hard}")
        resource.setrlimit(resource.RLIMIT_NOFILE, (needed, hard))


# -- one daemon for the whole module (bounded run time) ---------------------------


class Fixture:
    """The module's daemon, and real ids in it: random requests naming them
    get past not_found into the handlers' real work."""

    def __init__(self) -> None:
        self.dirs: list[str] = []
        self.daemon: ThreadDaemon | None = None
        self.restarts = 0
        self.start()

    def start(self) -> None:
        directory = tempfile.mkdtemp(prefix="aghfz", dir="/tmp")
        self.dirs.append(directory)
        d = self.daemon = ThreadDaemon(make_config(directory)).start()
        self.path = d.socket
        tasks: list[str] = []
        runs: list[str] = []
        for i in range(4):
            made = _call(d.socket, "tasks.create", {"title": f"seed {i}", "start": i % 2 == 0})
            tasks += [made["task"]["id"], made["task"]["identifier"]]
            if made["run"] is not None:
                runs.append(made["run"]["id"])
        seed = _call(d.socket, "tasks.create", {"title": "seed claimed", "start": True})
        # A task, its run claimed (lease 10 min) and that claim's token.
        self.task_id, self.run_id = seed["task"]["id"], seed["run"]["id"]
        claim = _call(d.socket, "runs.claim", {"id": self.run_id, "lease_ms": 600_000})
        self.token = claim["claim_token"]
        tasks.append(self.task_id)
        runs.append(self.run_id)
        self.known: dict[str, list[str]] = {
            "task": tasks,
            "run": runs,
            "token": [self.token],
            "session": ["ses_fuzz"],
        }
        self.known["any"] = [v for vs in self.known.values() for v in vs]

    def ensure(self) -> None:
        """A test that killed the daemon fails on its own; the next one gets a
        fresh daemon instead of failing for the same reason."""
        try:
            _alive(self.path, timeout=3)
            return
        except (OSError, EOFError, AssertionError):
            pass
        self.restarts += 1
        # A daemon that died in its thread (and RawConn's failed connect)
        # leave sockets to the garbage collector: their ResourceWarnings
        # belong to the test that killed it, not to the next one.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ResourceWarning)
            with contextlib.suppress(AssertionError):
                self.stop_daemon()
            gc.collect()
        self.start()

    def stop_daemon(self) -> None:
        if self.daemon is not None:
            d, self.daemon = self.daemon, None
            d.stop()


@pytest.fixture(scope="module")
def fuzz_daemon() -> Iterator[Fixture]:
    fx = Fixture()
    try:
        yield fx
    finally:
        with contextlib.suppress(AssertionError):
            fx.stop_daemon()
        for directory in fx.dirs:
            shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture
def fuzz(fuzz_daemon: Fixture) -> Fixture:
    fuzz_daemon.ensure()
    return fuzz_daemon


# -- strategies -----------------------------------------------------------------------

BIG_INTS = [2**63 - 1, 2**63, -(2**63), -(2**63) - 1, 2**64, -(2**64), 10**30, -(10**30)]
ints = st.integers() | st.sampled_from(BIG_INTS) | st.integers(-3, 3)
floats = st.floats(allow_nan=False, allow_infinity=False)
texts = (
    st.text(max_size=30)
    | st.sampled_from(["", " ", "T-1", "\u0000", "\u202e", "é" * 3, "🙂", "'; DROP TABLE t;--"])
    | st.integers(60_000, 70_000).map(lambda n: "x" * n)  # around the 64 KiB string caps
)
leaves = st.none() | st.booleans() | ints | floats | texts
json_values = st.recursive(
    leaves,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)


def _typed(t: msgspec.inspect.Type, known: list[str], depth: int = 0) -> st.SearchStrategy[Any]:
    """Values near what a field of type ``t`` accepts: valid ones, its bounds,
    one past its bounds. Random-typed values are mixed in by the caller."""
    mi = msgspec.inspect
    if isinstance(t, mi.UnionType):
        return st.one_of([_typed(x, known, depth) for x in t.types])
    if isinstance(t, mi.NoneType):
        return st.none()
    if isinstance(t, mi.BoolType):
        return st.booleans()
    if isinstance(t, mi.LiteralType):
        return st.sampled_from(list(t.values))
    if isinstance(t, mi.IntType):
        lo, hi = t.ge, t.le
        edges = list(BIG_INTS)
        if lo is not None:
            edges += [lo, lo - 1]
        if hi is not None:
            edges += [hi, hi + 1]
        return st.integers(min_value=lo, max_value=hi) | st.sampled_from(edges)
    if isinstance(t, mi.FloatType):
        return floats
    if isinstance(t, mi.StrType):
        lo, hi = t.min_length or 0, t.max_length
        edge = [hi, hi + 1] if hi is not None and hi <= 70_000 else []
        return (
            st.sampled_from(known)
            | st.text(min_size=lo, max_size=12)
            | st.sampled_from(edge).map(lambda n: "k" * n)
            if edge
            else st.sampled_from(known) | st.text(min_size=lo, max_size=12)
        )
    if isinstance(t, mi.ListType) and depth < 2:
        return st.lists(_typed(t.item_type, known, depth + 1), max_size=3)
    if isinstance(t, mi.DictType) and depth < 2:
        return st.dictionaries(st.text(max_size=6), json_values, max_size=3)
    if isinstance(t, mi.StructType) and depth < 2:
        return st.fixed_dictionaries(
            {}, optional={f.name: _typed(f.type, known, depth + 1) for f in t.fields}
        )
    return json_values


def _clamp(method: str, params: Any) -> Any:
    # agent.claim_next long-polls up to wait_ms (60 s): keep it short so an
    # example ends quickly; the value stays a valid long poll.
    if isinstance(params, dict):
        wait = params.get("wait_ms")
        if isinstance(wait, int) and not isinstance(wait, bool) and 200 < wait <= 60_000:
            params["wait_ms"] = wait % 200
    return params


# Which real ids a field of this name takes ("id" depends on the method).
NAMED = {
    "run_id": "run",
    "claim_token": "token",
    "session_id": "session",
    "task_id": "task",
    "parent_task_id": "task",
    "depends_on_id": "task",
    "depends_on_task_id": "task",
}


@st.composite
def params_for(draw: st.DrawFn, method: str, known: dict[str, list[str]]) -> Any:
    ptype = REGISTRY[method].decoder.type
    info = msgspec.inspect.type_info(ptype)
    assert isinstance(info, msgspec.inspect.StructType)
    shape = draw(st.sampled_from(["fields", "fields", "fields", "extra", "absent", "any"]))
    if shape == "absent":
        return msgspec.UNSET
    if shape == "any":
        return draw(json_values)

    # Mostly values of the field's own type (to get past decoding into the
    # handlers), sometimes anything at all; required fields mostly present.
    def value(f: msgspec.inspect.Field) -> st.SearchStrategy[Any]:
        typed = _typed(f.type, known["any"])
        group = NAMED.get(f.name) or (
            ("run" if method.startswith("runs.") else "task") if f.name == "id" else None
        )
        if group is not None:
            real = st.sampled_from(known[group])
            return st.one_of(real, real, real, typed, json_values)
        return st.one_of(typed, typed, typed, json_values)

    required = {f.name: value(f) for f in info.fields if f.required}
    optional = {f.name: value(f) for f in info.fields if not f.required}
    if draw(st.integers(0, 4)) == 0:  # sometimes drop a required field
        optional.update(required)
        required = {}
    params = draw(st.fixed_dictionaries(required, optional=optional))
    if shape == "extra":
        params.update(
            draw(st.dictionaries(st.text(max_size=10), json_values, min_size=1, max_size=3))
        )
    return _clamp(method, params)


# Ids: valid kinds (str, int incl. huge, float, null) and invalid ones.
valid_ids = st.text(max_size=20) | ints | floats | st.none()
invalid_ids = (
    st.booleans()
    | st.lists(st.integers(), max_size=2)
    | st.dictionaries(st.text(max_size=3), st.integers(), max_size=2)
)


@st.composite
def requests(draw: st.DrawFn, known: dict[str, list[str]]) -> tuple[dict[str, Any], str]:
    """A request object and how it must be answered: "id" (a reply carrying
    its id), "invalid" (an invalid-request reply, id null) or "none"."""
    method = draw(st.sampled_from(METHODS) | st.sampled_from(["", "nope", "tasks."]))
    msg: dict[str, Any] = {"jsonrpc": "2.0", "method": method}
    if method in REGISTRY:
        params = draw(params_for(method, known))
    else:
        params = draw(st.just(msgspec.UNSET) | json_values)
    if params is not msgspec.UNSET:
        msg["params"] = params
    kind = draw(st.sampled_from(["id", "id", "id", "notification", "bad-id"]))
    if kind == "notification":
        return msg, "none"
    if kind == "bad-id":
        msg["id"] = draw(invalid_ids)
        return msg, "invalid"
    msg["id"] = draw(valid_ids)
    return msg, "id"


def _id_key(value: Any) -> tuple[str, str]:
    """Ids compare by JSON type and value (1 and 1.0 and "1" are three ids)."""
    return type(value).__name__, repr(value)


@st.composite
def conversations(
    draw: st.DrawFn, known: dict[str, list[str]]
) -> tuple[bytes, Counter[tuple[str, str]], int]:
    """Bytes for one connection (singles and batches), the ids expected back
    (each exactly once) and how many replies with a null id are expected."""
    expected: Counter[tuple[str, str]] = Counter()
    nulls = 0
    seen: set[tuple[str, str]] = set()
    lines: list[bytes] = []

    def one() -> tuple[Any, str]:
        if draw(st.integers(0, 9)) == 0:
            # Not a request object (a top-level list would be a batch).
            return draw(leaves), "invalid"
        msg, how = draw(requests(known))
        if how == "id":
            key = _id_key(msg["id"])
            # Keep ids unique so each reply can be matched to one request;
            # a null id is counted with the other null-id replies.
            if key in seen and msg["id"] is not None:
                msg["id"] = f"dup-{len(seen)}"
                key = _id_key(msg["id"])
            seen.add(key)
        return msg, how

    def account(how: str, msg: Any) -> None:
        nonlocal nulls
        if how == "invalid" or (how == "id" and msg["id"] is None):
            nulls += 1
        elif how == "id":
            expected[_id_key(msg["id"])] += 1

    for _ in range(draw(st.integers(1, 4))):
        if draw(st.integers(0, 3)) == 0:
            items = [one() for _ in range(draw(st.integers(1, 5)))]
            for msg, how in items:
                account(how, msg)
            lines.append(_line([m for m, _ in items]))
        else:
            msg, how = one()
            account(how, msg)
            lines.append(_line(msg))
    return b"".join(lines), expected, nulls


def _converse(path: str, payload: bytes, chunks: list[int], want: int) -> list[dict[str, Any]]:
    """Send ``payload`` split at ``chunks``; read until ``want`` replies came
    (batch entries counted one by one), then a moment longer for extras."""
    conn = RawConn(path, timeout=15)
    replies: list[dict[str, Any]] = []
    try:
        start = 0
        for cut in [*sorted(chunks), len(payload)]:
            if cut > start:
                conn.send(payload[start:cut])
                start = cut
        deadline = time.monotonic() + 15
        grace = False
        while True:
            if len(replies) >= want and not grace:
                # A duplicate or stray reply would arrive right behind the others.
                conn.sock.settimeout(0.02)
                grace = True
            try:
                line = conn.recv()
            except TimeoutError:
                if grace:
                    return replies
                raise AssertionError(f"{len(replies)} of {want} replies: {replies!r}") from None
            if isinstance(line, list):
                assert line, "an empty array is never a valid reply"
                replies.extend(line)
            elif isinstance(line, dict) and "method" in line and "id" not in line:
                # Stream notifications of a subscription the example made.
                assert line["method"] == "stream.event", line
            else:
                replies.append(line)
            assert time.monotonic() < deadline, "replies still trickling after 15 s"
    finally:
        conn.close()


@FUZZ
@given(data=st.data())
def test_random_requests_every_method(fuzz: Fixture, data: st.DataObject) -> None:
    payload, expected, nulls = data.draw(conversations(fuzz.known))
    chunks = data.draw(st.lists(st.integers(0, len(payload)), max_size=4))
    replies = _converse(fuzz.path, payload, chunks, sum(expected.values()) + nulls)
    for reply in replies:
        _check_reply(reply)
    got = Counter(_id_key(r["id"]) for r in replies if r["id"] is not None)
    got_nulls = sum(1 for r in replies if r["id"] is None)
    assert got == expected, f"ids back {got} != ids sent {expected}"
    assert got_nulls == nulls, f"{got_nulls} null-id replies, expected {nulls}"
    _alive(fuzz.path)


def _int_fields(t: msgspec.inspect.Type, path: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    """Paths of every integer field in a params type (through unions, lists, structs)."""
    mi = msgspec.inspect
    if isinstance(t, mi.IntType):
        return [path]
    if isinstance(t, mi.UnionType):
        return [p for x in t.types for p in _int_fields(x, path)][:1]
    if isinstance(t, mi.ListType):
        return _int_fields(t.item_type, (*path, "0"))
    if isinstance(t, mi.StructType):
        return [p for f in t.fields for p in _int_fields(f.type, (*path, f.name))]
    return []


def _base_params(method: str, fx: Fixture) -> dict[str, Any]:
    """Params that decode for ``method`` and name real records where they can."""
    info = msgspec.inspect.type_info(REGISTRY[method].decoder.type)
    assert isinstance(info, msgspec.inspect.StructType)
    by_name = {
        "id": fx.run_id if method.startswith("runs.") else fx.task_id,
        "run_id": fx.run_id,
        "claim_token": fx.token,
        "session_id": "ses_fuzz",
        "lines": [{"message": "m", "step": 1}],
        "yaml": "name: fz\ntasks:\n  a:\n    title: a\n",
        "subscription": "sub_none",
        "depends_on_id": fx.task_id,
        "depends_on_task_id": fx.task_id,
    }
    return {f.name: by_name.get(f.name, "x") for f in info.fields if f.required}


INT_CASES = [
    (name, path)
    for name in METHODS
    for path in _int_fields(msgspec.inspect.type_info(REGISTRY[name].decoder.type))
]


@pytest.mark.parametrize(
    ("method", "path"), INT_CASES, ids=[f"{m}:{'.'.join(p)}" for m, p in INT_CASES]
)
def test_huge_ints_in_every_int_field(fuzz: Fixture, method: str, path: tuple[str, ...]) -> None:
    """Each integer field at and past the 64-bit edges: a result or a -32602
    naming the field, never internal, and the daemon lives (a stream
    subscription from after_sequence 2^63 used to kill it)."""
    values = [2**63 - 1, 2**63, -(2**63), -(2**63) - 1, 2**64, 10**30]
    conn = RawConn(fuzz.path, timeout=10)
    try:
        for i, value in enumerate(values):
            params: Any = _base_params(method, fuzz)
            target = params
            for key in path[:-1]:
                target = (
                    target[int(key)] if isinstance(target, list) else target.setdefault(key, {})
                )
            if path[-1] == "0" and isinstance(target, list):
                target[0] = value
            else:
                target[path[-1]] = _clamp(method, {path[-1]: value})[path[-1]]
            conn.send(_line({"jsonrpc": "2.0", "method": method, "params": params, "id": i}))
        seen: set[int] = set()
        while len(seen) < len(values):
            reply = conn.recv()
            if reply.get("method") == "stream.event":
                continue
            _check_reply(reply)
            seen.add(reply["id"])
            if "error" in reply and reply["error"]["code"] == -32602:
                value = values[reply["id"]]
                if not -(2**63) <= value < 2**63:
                    field = reply["error"]["data"]["details"].get("field", "")
                    assert field.startswith("$.params"), reply
        if method in ("events.subscribe", "tasks.stream"):
            time.sleep(0.5)  # a subscription starts after its reply: let it run
    finally:
        conn.close()
    _alive(fuzz.path)


def test_every_method_is_fuzzed() -> None:
    """The registry the fuzzer draws from is the daemon's whole method list."""
    assert len(METHODS) >= 47
    for name in METHODS:
        info = msgspec.inspect.type_info(REGISTRY[name].decoder.type)
        assert isinstance(info, msgspec.inspect.StructType), name


# -- hostile bytes -----------------------------------------------------------------


@settings(FUZZ, max_examples=max(10, EXAMPLES // 5))
@given(
    blob=st.binary(min_size=1, max_size=2000),
    bad=st.sampled_from([b"\xff", b"\xc3\x28", b"\xed\xa0\x80", b"\x80"]),
)
def test_random_bytes_each_line_answered(fuzz: Fixture, blob: bytes, bad: bytes) -> None:
    # Force invalid UTF-8 into every example, inside and outside a JSON string.
    mid = len(blob) // 2
    data = blob[:mid] + bad + blob[mid:] + b'\n{"x":"' + bad + b'"}\n'
    lines = [ln for ln in data.split(b"\n") if ln.strip()]
    replies = _converse(fuzz.path, data, [], len(lines))
    assert len(replies) == len(lines), (len(replies), len(lines))
    for reply in replies:
        _check_reply(reply)
        assert "error" in reply and reply["error"]["code"] in (-32700, -32600), reply
    _alive(fuzz.path)


def test_line_over_default_limit_closes_connection(fuzz: Fixture) -> None:
    """The default 1 MiB limit (test_jsonrpc checks a configured 4 KiB one)."""
    assert fuzz.daemon is not None  # ensure() started one
    limit = fuzz.daemon.config.max_line_bytes
    assert limit == 1 << 20
    conn = RawConn(fuzz.path)
    try:
        title = "oversize-" + "o" * limit
        conn.send(
            _line({"jsonrpc": "2.0", "method": "tasks.create", "params": {"title": title}, "id": 1})
        )
        reply = conn.recv()
        _check_reply(reply)
        assert reply["error"]["code"] == -32600, reply
        assert _closed_by_peer(conn), "the connection must be closed after an oversize line"
    finally:
        conn.close()
    assert _call(fuzz.path, "tasks.list", {"query": "oversize-"})["tasks"] == []
    _alive(fuzz.path)


def _nest(depth: int, kind: str) -> str:
    if kind == "array":
        return "[" * depth + "]" * depth
    return '{"a":' * depth + "1" + "}" * depth


@pytest.mark.parametrize("depth", [1_000, 100_000])
@pytest.mark.parametrize("kind", ["array", "object"])
@pytest.mark.parametrize("where", ["batch", "params", "id", "metadata"])
def test_deep_nesting_gets_an_error_reply(fuzz: Fixture, depth: int, kind: str, where: str) -> None:
    deep = _nest(depth, kind)
    line = {
        "batch": deep,
        "params": '{"jsonrpc":"2.0","id":"deep","method":"tasks.list","params":' + deep + "}",
        "id": '{"jsonrpc":"2.0","id":' + deep + ',"method":"server.info"}',
        "metadata": '{"jsonrpc":"2.0","id":"deep","method":"tasks.create",'
        '"params":{"title":"deep","metadata":' + deep + "}}",
    }[where]
    conn = RawConn(fuzz.path, timeout=5)
    try:
        conn.send(line.encode() + b"\n")
        try:
            reply = conn.recv()
        except TimeoutError:
            raise AssertionError(f"no reply to JSON nested {depth} deep in the {where}") from None
    finally:
        conn.close()
    if isinstance(reply, list):  # a batch of one deep non-request
        assert len(reply) == 1
        reply = reply[0]
    _check_reply(reply)
    assert "error" in reply, reply
    if where in ("params", "metadata"):
        assert reply["id"] == "deep", reply  # the id is plain to read: echo it
    else:
        assert reply["id"] is None, reply
    _alive(fuzz.path)


@pytest.mark.parametrize("text", [b"[ ]\n", b"[\t]\n", b" [] \n"])
def test_empty_batch_with_whitespace(fuzz: Fixture, text: bytes) -> None:
    conn = RawConn(fuzz.path)
    try:
        conn.send(text)
        reply = conn.recv()
    finally:
        conn.close()
    assert isinstance(reply, dict), reply
    _check_reply(reply)
    assert reply["error"]["code"] == -32600 and reply["id"] is None


def test_batch_of_1000(fuzz: Fixture) -> None:
    batch = [
        {
            "jsonrpc": "2.0",
            "method": "server.info" if i % 3 else "tasks.get",
            "id": i,
            "params": {"id": "T-999999"} if i % 3 == 0 else {},
        }
        for i in range(1000)
    ]
    batch[500].pop("id")  # one notification: no entry for it
    conn = RawConn(fuzz.path, timeout=20)
    try:
        conn.send(_line(batch))
        replies = conn.recv()
    finally:
        conn.close()
    assert isinstance(replies, list) and len(replies) == 999
    assert sorted(r["id"] for r in replies) == [i for i in range(1000) if i != 500]
    for r in replies:
        _check_reply(r)
        if r["id"] % 3 == 0:
            assert r["error"]["code"] == -32004
    _alive(fuzz.path)


# -- abandoned connections --------------------------------------------------------------


@pytest.mark.parametrize("how", ["close", "shut_wr", "reset"])
def test_half_written_line_then_gone(fuzz: Fixture, how: str) -> None:
    conn = RawConn(fuzz.path)
    conn.send(b'{"jsonrpc":"2.0","id":1,"method":"tasks.create","params":{"title":"half-writ')
    if how == "shut_wr":
        conn.sock.shutdown(socket.SHUT_WR)
        # Nothing more can come: the daemon must hang up, not hold the connection.
        assert _closed_by_peer(conn, timeout=5)
    elif how == "reset":
        conn.sock.setsockopt(
            socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00"
        )
    conn.close()
    _alive(fuzz.path)
    assert _call(fuzz.path, "tasks.list", {"query": "half-writ"})["tasks"] == []


def test_connection_closed_mid_pipeline(fuzz: Fixture) -> None:
    """200 pipelined writes, then the client vanishes: the daemon survives and
    every task it created is whole (no reply needed, nobody is there)."""
    conn = RawConn(fuzz.path)
    payload = b"".join(
        _line(
            {
                "jsonrpc": "2.0",
                "method": "tasks.create",
                "id": i,
                "params": {"title": f"gone-{i}", "start": True},
            }
        )
        for i in range(200)
    )
    conn.send(payload)
    conn.close()
    _alive(fuzz.path)
    query = {"query": "gone-", "limit": 1000}
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:  # until the daemon stops creating them
        made = _call(fuzz.path, "tasks.list", query)["tasks"]
        time.sleep(0.1)
        if len(_call(fuzz.path, "tasks.list", query)["tasks"]) == len(made):
            break
    for task in made:
        assert task["status"] == "ready", task  # created with its run, not half
        _call(fuzz.path, "tasks.cancel", {"id": task["id"]})


def test_long_poll_abandoned_does_not_swallow_a_run(fuzz: Fixture) -> None:
    """A claim_next long poll whose client hung up must not claim the next
    run for nobody (it would sit claimed until its lease ran out)."""
    conn = RawConn(fuzz.path)
    conn.send(
        _line(
            {
                "jsonrpc": "2.0",
                "id": 1,
                "method": "session.hello",
                "params": {"session_id": "ses_gone"},
            }
        )
        + _line(
            {
                "jsonrpc": "2.0",
                "id": 2,
                "method": "agent.claim_next",
                "params": {"wait_ms": 3000, "network_channel": "fz-lp"},
            }
        )
    )
    assert conn.recv()["id"] == 1
    time.sleep(0.2)
    conn.close()
    time.sleep(0.2)
    made = _call(
        fuzz.path,
        "tasks.create",
        {"title": "after the hang-up", "start": True, "network_channel": "fz-lp"},
    )
    time.sleep(0.3)
    run = _call(fuzz.path, "runs.get", {"id": made["run"]["id"]})["run"]["run"]
    assert run["status"] == "queued", f"a dead long poll claimed the run: {run}"
    _call(fuzz.path, "tasks.cancel", {"id": made["task"]["id"]})


# -- hostile clients ------------------------------------------------------------------


def _timed_info(path: str, rid: str, timeout: float = 10) -> float:
    """Seconds a fresh connection takes to get server.info answered (busy retried)."""
    started = time.monotonic()
    while True:
        conn = RawConn(path, timeout=timeout)
        try:
            conn.request("server.info", {}, id=rid)
            reply = conn.recv()
        finally:
            conn.close()
        assert reply["id"] == rid, reply
        if "error" in reply and reply["error"]["code"] == -32029 and time.monotonic() - started < 5:
            time.sleep(0.1)  # a well-behaved client retries busy
            continue
        assert reply["result"]["protocol"] == 1, reply
        return time.monotonic() - started


def test_1000_idle_connections(fuzz: Fixture) -> None:
    # Both ends live in this process (in-process daemon): 2 fds a connection.
    _raise_fd_limit(2 * 1000 + 512)
    idle: list[socket.socket] = []
    failures: list[BaseException] = []
    lock = threading.Lock()

    def opener(n: int) -> None:
        for _ in range(n):
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                s.settimeout(10)
                s.connect(fuzz.path)
            except OSError as exc:
                s.close()
                with lock:
                    failures.append(exc)
                continue
            with lock:
                idle.append(s)

    # Opened at once, from several threads, as an attacker would.
    threads = [threading.Thread(target=opener, args=(125,)) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    try:
        assert not failures, f"{len(failures)} of 1000 connects failed: {failures[:3]}"
        worst = max(_timed_info(fuzz.path, f"good-{i}") for i in range(20))
        assert worst < 1.0, f"a good client waited {worst:.2f}s among 1000 idle connections"
    finally:
        for s in idle:
            s.close()
    _alive(fuzz.path)


def test_slow_loris_does_not_hold_up_others(fuzz: Fixture) -> None:
    line = _line({"jsonrpc": "2.0", "method": "server.info", "params": {}, "id": "loris"})
    stop = threading.Event()
    answered: list[bool] = []

    def loris() -> None:
        with contextlib.closing(RawConn(fuzz.path, timeout=10)) as conn:
            try:
                for i in range(len(line)):
                    conn.send(line[i : i + 1])
                    if stop.wait(0.05):
                        return
                answered.append(conn.recv()["id"] == "loris")
            except (OSError, EOFError):
                answered.append(False)

    lorises = [threading.Thread(target=loris) for _ in range(20)]
    for t in lorises:
        t.start()
    try:
        time.sleep(0.3)
        times = [_timed_info(fuzz.path, f"brisk-{i}") for i in range(30)]
        assert max(times) < 1.0, (
            f"good client's worst latency {max(times):.2f}s beside slow lorises"
        )
    finally:
        for t in lorises:
            t.join(15)
        stop.set()
    # A slow client is still a client: its request, once whole, is answered.
    assert answered == [True] * 20, answered


def _proc_kb(pid: int, key: str) -> int:
    with open(f"/proc/{pid}/status") as f:
        for row in f:
            if row.startswith(key + ":"):
                return int(row.split()[1])
    raise KeyError(key)


def _cpu_ticks(pid: int) -> int:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])  # utime + stime


@pytest.mark.slow
def test_pipelining_clients_that_never_read_stay_bounded(short_dir: str, procs: list[Any]) -> None:
    """10 connections × 2,000 ``tasks.list {limit: 100}`` (~70 KB replies),
    never read: the daemon must stop reading them (backpressure) instead of
    computing every reply into memory — growth well under 100 MB."""
    sock, db = os.path.join(short_dir, "s"), os.path.join(short_dir, "db")
    proc = spawn_daemon(sock, db)
    procs.append(proc)
    conn = RawConn(sock)
    for i in range(100):
        conn.request("tasks.create", {"title": f"mem-{i}", "description": "d" * 200}, id=i)
        assert "result" in conn.recv()
    conn.close()
    _alive(sock)
    base = _proc_kb(proc.pid, "VmRSS")
    line = _line({"jsonrpc": "2.0", "method": "tasks.list", "params": {"limit": 100}, "id": 1})
    hogs = [RawConn(sock, timeout=2) for _ in range(10)]
    senders = []
    for hog in hogs:

        def flood(h: RawConn = hog) -> None:
            with contextlib.suppress(OSError):  # a send timeout is the backpressure we want
                h.send(line * 2000)

        senders.append(threading.Thread(target=flood, daemon=True))
    for t in senders:
        t.start()
    try:
        started = time.monotonic()
        ticks, quiet_since = _cpu_ticks(proc.pid), time.monotonic()
        growth_mb = 0.0
        while time.monotonic() - started < 15:
            time.sleep(0.25)
            growth_mb = (_proc_kb(proc.pid, "VmHWM") - base) / 1024
            assert growth_mb < 100, (
                f"daemon grew {growth_mb:.0f} MB for clients that never read "
                f"({time.monotonic() - started:.1f}s in)"
            )
            now_ticks = _cpu_ticks(proc.pid)
            if now_ticks != ticks:
                ticks, quiet_since = now_ticks, time.monotonic()
            elif time.monotonic() - quiet_since > 1.5:
                break  # settled: nothing more is being computed for the hogs
        assert _timed_info(sock, "good") < 1.0
    finally:
        for hog in hogs:
            hog.close()
    assert proc.poll() is None, "daemon died"
    stop_process(proc)

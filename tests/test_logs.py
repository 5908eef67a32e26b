"""The daemon's log (aghd/logs.py): one line per event in text, journal or
JSON form, journal form picked when stderr is the journal, and no claim
token in any line, even at DEBUG with a whole claim cycle logged."""

from __future__ import annotations

import json
import logging
import os
import re
import sys

import pytest

from agh import errors
from agh.client import Client
from aghd.logs import REDACTED, LineFormatter, redact
from tests.helpers.cli import clean_environ
from tests.helpers.daemons import spawn_daemon, stop_process

TOKEN = "ct_" + "A1b2-C3_d4" * 4 + "xyz"  # the shape aghd.tokens makes: 43 characters
TEXT_LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3} (DEBUG|INFO|WARNING|ERROR) \S+: ")


def test_redact_hides_tokens_and_claim_token_fields() -> None:
    assert len(TOKEN) == 46
    assert redact(f"claimed with {TOKEN}.") == f"claimed with {REDACTED}."
    assert TOKEN not in redact(json.dumps({"claim_token": TOKEN}))
    assert "secret" not in redact('{"claim_token": "secret", "run_id": "run_1"}')
    assert "secret" not in redact("Params(claim_token='secret', lease_ms=5)")
    assert redact("run run_1 claimed by ct_ab") == "run run_1 claimed by ct_ab"


def record(msg: str, *args: object, exc: bool = False) -> logging.LogRecord:
    info = None
    if exc:
        try:
            raise ValueError(f"bad {TOKEN}")
        except ValueError:
            info = sys.exc_info()
    return logging.LogRecord("aghd.server", logging.ERROR, __file__, 1, msg, args, info)


def test_a_traceback_is_folded_into_its_events_line_in_every_format() -> None:
    for fmt in ("text", "journal", "json"):
        line = LineFormatter(fmt).format(record("failed: %s", "x", exc=True))
        assert "\n" not in line, fmt
        assert TOKEN not in line, fmt
        assert "ValueError" in line, fmt
    assert LineFormatter("journal").format(record("x")).startswith("<3>aghd.server: x")
    # JSON escapes quotes: the field rule must see the message before that.
    quoted = LineFormatter("json").format(record('params {"claim_token": "secret"}'))
    assert "secret" not in quoted and json.loads(quoted)["msg"].endswith(REDACTED + '"}')
    doc = json.loads(LineFormatter("json").format(record("failed: %s", "x", exc=True)))
    assert (doc["level"], doc["logger"], doc["msg"]) == ("error", "aghd.server", "failed: x")
    assert doc["ts"].endswith("Z") and "Traceback" in doc["exc"]


def cycle(socket_path: str) -> str:
    """A whole claim cycle, every call carrying the token; returns it."""
    with Client(socket_path) as c:
        c.tasks_create("logged", start=True, max_attempts=3)
        c.tasks_create("logged too", start=True)
        claim = c.claim_next(lease_ms=60_000).claim
        assert claim is not None
        token = claim.claim_token
        c.heartbeat(claim.run.id, token)
        c.agent_log(claim.run.id, token, [{"message": f"my token is {token}"}])
        c.fail(claim.run.id, token, f"failed holding {token}", retry=True)
        second = c.claim_next().claim
        assert second is not None
        c.complete(second.run.id, second.claim_token, {"token": second.claim_token})
        # A stale token: refused, and the refusal logged with its params.
        with pytest.raises(errors.AghError):
            c.heartbeat(second.run.id, token)
        return token + "\n" + second.claim_token


def test_no_claim_token_reaches_the_log_at_debug(short_dir: str) -> None:
    log = os.path.join(short_dir, "aghd.log")
    sock = os.path.join(short_dir, "agh.sock")
    proc = spawn_daemon(sock, os.path.join(short_dir, "agh.db"), level="DEBUG", log=log)
    try:
        tokens = cycle(sock).split()
    finally:
        assert stop_process(proc) == 0
        assert proc.stdout is not None
        proc.stdout.close()
    with open(log, encoding="utf-8") as fh:
        lines = fh.read().splitlines()
    assert len(lines) > 5
    for line in lines:
        assert TEXT_LINE.match(line), line
        for token in tokens:
            assert token not in line, line
        assert not re.search(r"ct_[A-Za-z0-9_-]{16}", line), line


def serve_once(
    short_dir: str, log: str, *args: str, env: dict[str, str] | None = None
) -> list[str]:
    """Start aghd with its stderr to ``log``, stop it; the lines it logged."""
    sock, db = os.path.join(short_dir, "agh.sock"), os.path.join(short_dir, "agh.db")
    proc = spawn_daemon(sock, db, *args, level="INFO", log=log, env=env)
    assert stop_process(proc) == 0
    assert proc.stdout is not None
    proc.stdout.close()
    with open(log, encoding="utf-8") as fh:
        return fh.read().splitlines()


def test_journal_format_when_stderr_is_the_journal_and_json_on_request(short_dir: str) -> None:
    log = os.path.join(short_dir, "journal.log")
    open(log, "wb").close()  # spawn_daemon truncates it: same inode
    st = os.stat(log)
    env = clean_environ(JOURNAL_STREAM=f"{st.st_dev}:{st.st_ino}")
    lines = serve_once(short_dir, log, env=env)
    assert lines and all(re.match(r"^<[2-7]>aghd(\.\w+)*: ", line) for line in lines), lines
    assert any(line.startswith("<6>aghd: aghd ") and " serving " in line for line in lines)
    # The variable names another stream (stderr redirected): plain text.
    lines = serve_once(short_dir, os.path.join(short_dir, "text.log"), env=env)
    assert lines and all(TEXT_LINE.match(line) for line in lines), lines
    lines = serve_once(short_dir, os.path.join(short_dir, "json.log"), "--log-format", "json")
    docs = [json.loads(line) for line in lines]
    assert docs and {"ts", "level", "logger", "msg"} <= set(docs[0])
    assert docs[-1]["msg"] == "aghd stopped"

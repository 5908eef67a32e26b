"""The ``agh`` CLI in tests: run it in-process, give subprocesses a clean
environment, and the small steps (add a task, claim one, read ``--json``)
that several CLI test files repeat.

Owns CLI-level helpers only; the ``agh`` fixture that points ``invoke`` at
the test daemon lives in ``tests/conftest.py``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from typing import Any

from click.testing import CliRunner, Result

from agh.cli import main as agh_main

# The ``agh`` fixture's type: ``agh(*args, env=..., input=...)`` -> click's Result.
Agh = Callable[..., Result]

# Variables a developer's shell may set that would change what the CLI does.
# AGH_AUTOSTART=0: a test that finds no daemon must see exit 69, not start one.
CLEAN_ENV: dict[str, str | None] = {
    "AGH_SOCKET": None,
    "AGH_CLAIM_TOKEN": None,
    "AGH_RUN_ID": None,
    "AGH_SESSION_ID": None,
    "AGH_AUTOSTART": "0",
}


def clean_environ(**extra: str) -> dict[str, str]:
    """This process's environment with CLEAN_ENV applied, for a subprocess."""
    env = {k: v for k, v in os.environ.items() if k not in CLEAN_ENV}
    env.update({k: v for k, v in CLEAN_ENV.items() if v is not None})
    env.update(extra)
    return env


def invoke(
    *args: str, env: dict[str, str | None] | None = None, input: str | None = None
) -> Result:
    """Run ``agh ARGS...`` in-process; ``input`` feeds its stdin."""
    return CliRunner().invoke(
        agh_main, list(args), input=input, env={**CLEAN_ENV, **(env or {})}, prog_name="agh"
    )


def ok_json(result: Result) -> Any:
    """The JSON document a command printed; fails the test unless it exited 0."""
    assert result.exit_code == 0, (result.stdout, result.stderr)
    return json.loads(result.stdout)


def add_task(agh: Agh, *args: str) -> dict[str, Any]:
    """``agh add ARGS --json``: the created task and its run."""
    return ok_json(agh("add", *args, "--json"))  # type: ignore[no-any-return]


def claim(agh: Agh, *args: str) -> dict[str, Any]:
    """``agh claim --json ARGS``: the claim; fails the test if there was no work."""
    got = ok_json(agh("claim", "--json", *args))["claim"]
    assert got is not None
    return got  # type: ignore[no-any-return]

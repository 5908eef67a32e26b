"""The linters as tests, so CI (the README's test command) runs them: ruff
(lint and format) and mypy strict over agh, aghd and the tests — and a
proof that mypy does check a handler's store calls end to end (the typed
``Store`` in aghd/services.py), by showing it a wrong one."""

from __future__ import annotations

import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
LINTED = ["agh", "aghd", "tests", "bench", "contrib"]


def tool(name: str) -> str:
    """The tool installed beside this interpreter (the venv's), else on PATH."""
    beside = Path(sys.executable).with_name(name)
    found = str(beside) if beside.exists() else shutil.which(name)
    if found is None:
        pytest.skip(f"{name} is not installed (pip install -e '.[test]')")
    return found


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=300)


def test_ruff_finds_nothing() -> None:
    out = run(tool("ruff"), "check", *LINTED)
    assert out.returncode == 0, out.stdout + out.stderr


def test_the_code_is_ruff_formatted() -> None:
    out = run(tool("ruff"), "format", "--check", *LINTED)
    assert out.returncode == 0, out.stdout + out.stderr


def test_mypy_strict_finds_nothing() -> None:
    out = run(tool("mypy"))  # packages and strictness: pyproject.toml
    assert out.returncode == 0, out.stdout + out.stderr


def test_mypy_checks_a_handlers_store_calls(tmp_path: Path) -> None:
    """A handler passing the wrong arguments to a store function through
    ``ctx.store`` is a type error, as is using its result wrongly."""
    bad = tmp_path / "bad_handler.py"
    bad.write_text(
        textwrap.dedent(
            """
            from aghd.rpc import Context
            from aghd.store import leases


            async def handler(ctx: Context) -> str:
                await ctx.store.write(leases.heartbeat, ctx.caller, "run_1", 42, None)
                await ctx.store.read(leases.next_deadline)
                deadline = await ctx.store.read(leases.next_deadline, 0)
                return deadline
            """
        )
    )
    out = run(tool("mypy"), "--strict", "--ignore-missing-imports", str(bad))
    errors = [line for line in out.stdout.splitlines() if ": error:" in line]
    assert out.returncode == 1, out.stdout + out.stderr
    # The token hash given as an int, a missing argument, and an
    # ``int | None`` returned as ``str``: one error each, on their lines.
    assert sorted(int(line.split(":")[1]) for line in errors) == [7, 8, 10], out.stdout

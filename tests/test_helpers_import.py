"""Test helpers have one import path: ``tests.helpers``.

pytest imports ``conftest.py`` itself; a test that imports it again (as
``conftest`` or ``tests.conftest``) gets a second copy of every class in it,
so ``isinstance`` and module state silently disagree. A test that imports
from another ``test_*.py`` module runs that module's import side effects and
ties two test files together. Both habits are refused here, and
``conftest.py`` is kept to fixtures so there is nothing in it to import.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent
SOURCES = sorted(TESTS.rglob("*.py"))


def _relative(path: Path) -> str:
    return path.relative_to(TESTS).as_posix()


def _imported(node: ast.Import | ast.ImportFrom, path: Path) -> list[str]:
    """Dotted names ``node`` imports, relative imports resolved against ``path``
    (``from tests import conftest`` yields ``tests.conftest``)."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    base = node.module or ""
    if node.level:
        package = ["tests", *path.relative_to(TESTS).parent.parts]
        anchor = package[: len(package) - (node.level - 1)]
        base = ".".join([*anchor, base] if base else anchor)
    return [base, *(f"{base}.{alias.name}" for alias in node.names)]


def _forbidden(name: str) -> str | None:
    """Why importing ``name`` is refused, or None if it is fine."""
    parts = name.split(".")
    if parts[0] == "tests":
        parts = parts[1:]
    if not parts:
        return None
    if parts[0] == "conftest":
        return "imports conftest (import helpers from tests.helpers instead)"
    if parts[0].startswith("test_") and (TESTS / f"{parts[0]}.py").exists():
        return f"imports the test module {parts[0]} (move what it shares into tests.helpers)"
    return None


def offences(path: Path, source: str | None = None) -> list[str]:
    """Lines in ``path`` (or in ``source``, read as if it were at ``path``)
    that import conftest or another test module."""
    text = path.read_text() if source is None else source
    found = []
    for node in ast.walk(ast.parse(text, str(path))):
        if isinstance(node, ast.Import | ast.ImportFrom):
            for name in _imported(node, path):
                why = _forbidden(name)
                if why:
                    found.append(f"{_relative(path)}:{node.lineno}: {why}")
                    break
    return found


@pytest.mark.parametrize("path", SOURCES, ids=_relative)
def test_imports_no_conftest_and_no_other_test_module(path: Path) -> None:
    assert offences(path) == []


def test_conftest_holds_only_fixtures() -> None:
    """Every function or class in conftest.py is a fixture, so no test needs
    to import from it (the ``tests/helpers`` package holds the rest)."""
    tree = ast.parse((TESTS / "conftest.py").read_text())
    strays = [
        node.name
        for node in tree.body
        if isinstance(node, ast.ClassDef)
        or (
            isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
            and not any("fixture" in ast.unparse(d) for d in node.decorator_list)
        )
    ]
    assert strays == [], "move these helpers from tests/conftest.py to tests/helpers/"


@pytest.mark.parametrize(
    "source",
    [
        "from conftest import ThreadDaemon",
        "from tests.conftest import clean_environ",
        "import conftest",
        "import tests.conftest as c",
        "from tests import conftest",
        "from . import conftest",
        "from .conftest import RawConn",
        "from tests.test_cli import ok_json",
        "from test_cli import ok_json",
        "from tests import test_cli",
        "from .test_cli import Agh",
        "def f():\n    from tests.conftest import invoke",
    ],
)
def test_the_check_catches(source: str) -> None:
    assert offences(TESTS / "test_probe.py", source) != []


def test_the_check_catches_relative_imports_from_helpers() -> None:
    assert offences(TESTS / "helpers" / "probe.py", "from .. import conftest") != []
    assert offences(TESTS / "helpers" / "probe.py", "from ..test_cli import Agh") != []


def test_the_check_allows_helpers_and_libraries() -> None:
    ok = (
        "from tests.helpers.cli import ok_json\n"
        "from tests.helpers import daemons\n"
        "from .helpers.wire import RawConn\n"
        "import pytest\n"
        "from agh.client import Client\n"
    )
    assert offences(TESTS / "test_probe.py", ok) == []

"""Writes ``AsyncClient``'s RPC methods (in ``agh/aclient.py``, between its
"generated" markers) from the sync ``Client``'s (``agh/client.py``), so each
RPC is written once:

    python -m agh._gen_async          # rewrite agh/aclient.py
    python -m agh._gen_async --check  # exit 1 if it is stale (tests/test_aclient.py)

An RPC method is a public method of ``Client`` that calls ``self.call`` (or
another RPC method). Its source text is copied as it stands (docstring,
comments, ``# type: ignore``, and the section comment before it) with two
edits at the places the AST gives: ``async`` before ``def``, ``await``
before each call of ``self.call`` or of another RPC method. The whole file
then goes through ``ruff format``, so the result is what ``ruff format``
would leave. The rest of ``Client`` (the socket, ``next_event``, ``claim``)
has its own async version in ``agh/aclient.py``. A copied method that
needs more than these two edits (one that touches the socket) fails mypy
and ruff on the generated file, rather than misbehaving quietly.

Why a generator and not a shared runtime definition: the generated methods
are plain code that a reader, a debugger and mypy see as they are, and
``agh/client.py`` stays as it is. Must not: be imported at run time (only
by developers and the test).
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).parent
SOURCE = HERE / "client.py"
TARGET = HERE / "aclient.py"
BEGIN = "# -- generated from agh/client.py by `python -m agh._gen_async`: do not edit --"
END = "# -- end of generated methods --"


def rpc_methods(tree: ast.Module) -> list[ast.FunctionDef]:
    """Client's RPC methods, in source order."""
    cls = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "Client")
    public = {
        n.name: n for n in cls.body if isinstance(n, ast.FunctionDef) and not n.name.startswith("_")
    }
    rpcs: set[str] = set()
    grew = True
    while grew:  # methods that call RPC methods are RPC methods too
        grew = False
        for name, fn in public.items():
            if name not in rpcs and _self_calls(fn) & (rpcs | {"call"}):
                rpcs.add(name)
                grew = True
    return [fn for fn in public.values() if fn.name in rpcs]


def _self_calls(fn: ast.FunctionDef) -> set[str]:
    return {_self_method(n) for n in ast.walk(fn) if _self_method(n)} - {""}


def _self_method(node: ast.AST) -> str:
    """``name`` when ``node`` is a call ``self.name(...)``, else ""."""
    if (
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and isinstance(node.func.value, ast.Name)
        and node.func.value.id == "self"
    ):
        return node.func.attr
    return ""


def asyncify(lines: list[str], fn: ast.FunctionDef, awaited: set[str]) -> list[str]:
    """``fn``'s source lines as an ``async def`` that awaits ``awaited`` calls."""
    first = fn.decorator_list[0].lineno if fn.decorator_list else fn.lineno
    # (line, byte column, text) insertions, in the method's own line numbers.
    edits: list[tuple[int, int, str]] = [(fn.lineno, fn.col_offset, "async ")]
    parents = {child: node for node in ast.walk(fn) for child in ast.iter_child_nodes(node)}
    for node in ast.walk(fn):
        if _self_method(node) in awaited:
            assert isinstance(node, ast.Call) and node.end_lineno is not None
            parent = parents.get(node)
            # `self.call(...).x` must become `(await self.call(...)).x`.
            if isinstance(parent, ast.Attribute | ast.Subscript) or (
                isinstance(parent, ast.Call) and parent.func is node
            ):
                edits.append((node.lineno, node.col_offset, "(await "))
                edits.append((node.end_lineno, node.end_col_offset or 0, ")"))
            else:
                edits.append((node.lineno, node.col_offset, "await "))
    out = [line.encode() for line in lines[first - 1 : fn.end_lineno]]
    for lineno, col, text in sorted(edits, reverse=True):
        i = lineno - first
        out[i] = out[i][:col] + text.encode() + out[i][col:]
    return [line.decode() for line in out]


def generated_section(source: str) -> str:
    """The methods between the markers, with the comments that precede each."""
    tree = ast.parse(source)
    lines = source.splitlines()
    cls = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "Client")
    methods = rpc_methods(tree)
    awaited = {fn.name for fn in methods} | {"call"}
    ends = {id(b): b.end_lineno or b.lineno for b in cls.body}
    previous_end = {id(b): ends[id(a)] for a, b in zip(cls.body, cls.body[1:], strict=False)}
    chunks: list[str] = []
    for fn in methods:
        first = fn.decorator_list[0].lineno if fn.decorator_list else fn.lineno
        gap = lines[previous_end.get(id(fn), first - 1) : first - 1]
        chunks.extend(line for line in gap if line.strip().startswith("#") or not line.strip())
        chunks.extend(asyncify(lines, fn, awaited))
    return "\n".join(chunks).strip("\n")


def render(source: str | None = None, target: str | None = None) -> str:
    """``agh/aclient.py`` as it should be: its own text outside the markers,
    the generated methods between them, formatted by ruff."""
    source = SOURCE.read_text() if source is None else source
    target = TARGET.read_text() if target is None else target
    lines = target.splitlines()
    starts = [i for i, line in enumerate(lines) if line.strip() == BEGIN]
    stops = [i for i, line in enumerate(lines) if line.strip() == END]
    if len(starts) != 1 or len(stops) != 1 or starts[0] > stops[0]:
        raise SystemExit(f"{TARGET}: expected one {BEGIN!r} line, then one {END!r} line")
    begin, end = starts[0], stops[0]
    indent = lines[begin][: len(lines[begin]) - len(lines[begin].lstrip())]
    body = generated_section(source)
    text = "\n".join([*lines[: begin + 1], "", body, "", indent + END, *lines[end + 1 :]]) + "\n"
    return _ruff_format(text)


def _ruff_format(text: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "ruff", "format", "--stdin-filename", str(TARGET), "-"],
        input=text,
        capture_output=True,
        text=True,
        check=False,
        cwd=HERE.parent,  # ruff reads its settings from pyproject.toml
    )
    if done.returncode != 0:
        raise SystemExit(
            f"ruff format failed on the generated text (is ruff installed? "
            f"pip install -e '.[test]'):\n{done.stderr}"
        )
    return done.stdout


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    text = render()
    if args == ["--check"]:
        if TARGET.read_text() != text:
            print(f"{TARGET} is stale: run `python -m agh._gen_async`", file=sys.stderr)
            return 1
        return 0
    if args:
        print("usage: python -m agh._gen_async [--check]", file=sys.stderr)
        return 2
    TARGET.write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

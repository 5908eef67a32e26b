"""The method table (``agh.protocol.methods``) against its three readers:
aghd's handlers, the client's methods and agh-protocol(7)."""

from __future__ import annotations

import ast
import importlib
import pkgutil
import re
from pathlib import Path

import aghd.handlers
from agh.protocol.methods import METHODS
from aghd.rpc import REGISTRY

ROOT = Path(__file__).resolve().parent.parent

for _module in pkgutil.iter_modules(aghd.handlers.__path__):
    importlib.import_module(f"aghd.handlers.{_module.name}")


def test_every_method_has_a_handler_and_every_handler_a_method() -> None:
    assert set(REGISTRY) == set(METHODS)
    assert len(METHODS) == 49


def test_each_handler_decodes_the_tables_params_and_returns_its_result() -> None:
    for name, method in METHODS.items():
        registered = REGISTRY[name]
        assert registered.decoder.type is method.params, name
        returns = registered.handler.__annotations__["return"]
        assert str(returns).rsplit(".", 1)[-1] == method.result.__name__, name


def client_calls() -> dict[str, str]:
    """Method name → result class name, from each ``self.call(...)`` in
    agh/client.py (an f-string name stands for every method it can make)."""
    tree = ast.parse((ROOT / "agh" / "client.py").read_text())
    calls: dict[str, str] = {}
    for node in ast.walk(tree):
        if not (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr == "call"
            and len(node.args) >= 3
            and isinstance(node.args[2], ast.Attribute)
        ):
            continue
        first, result = node.args[0], node.args[2].attr
        if isinstance(first, ast.Constant):
            assert isinstance(first.value, str), ast.dump(node)
            calls[first.value] = result
        elif isinstance(first, ast.JoinedStr):
            # An f-string's literal parts are always str constants.
            prefix = "".join(
                v.value
                for v in first.values
                if isinstance(v, ast.Constant) and isinstance(v.value, str)
            )
            calls.update({m: result for m in METHODS if m.startswith(prefix)})
    return calls


def test_the_client_has_a_method_for_each_with_its_result_type() -> None:
    calls = client_calls()
    assert set(calls) == set(METHODS)
    for name, method in METHODS.items():
        assert calls[name] == method.result.__name__, name


def test_the_protocol_man_page_documents_each() -> None:
    page = (ROOT / "man" / "agh-protocol.7").read_text()
    documented = set(re.findall(r"^\.BR? ([a-z_]+(?:\.[a-z_]+)+)", page, re.M))
    documented |= {
        name
        for line in re.findall(r"^\.BR (.+)$", page, re.M)
        for name in re.findall(r"([a-z_]+(?:\.[a-z_]+)+)", line)
    }
    assert set(METHODS) <= documented, sorted(set(METHODS) - documented)


def test_each_handler_lives_in_the_module_of_its_namespace() -> None:
    for name, registered in REGISTRY.items():
        namespace = name.split(".")[0]
        module = registered.handler.__module__.rsplit(".", 1)[-1]
        # session.hello sits with sessions.list: one resource, two spellings.
        assert module in (namespace, namespace + "s"), (name, module)

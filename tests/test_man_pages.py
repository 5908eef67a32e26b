"""Every man page: renders without a warning, is installed with the package,
and says what the code does. agh(1) against the click tree is
tests/test_man_agh.py; here aghd(1) against ``aghd.main.main`` and
``agh.settings.SETTINGS``, and agh-workflow(5)'s examples and error message
against the daemon's own workflow parser.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import tomllib
import zipfile
from pathlib import Path
from typing import Any

import click
import pytest
import yaml

from agh import settings
from agh.errors import ConfigError, InvalidParams
from aghd import workflows
from aghd.main import main as aghd_main
from tests.helpers.man import man_sections, mentions, plain

ROOT = Path(__file__).resolve().parent.parent
MAN = ROOT / "man"
PAGES = sorted(p for p in MAN.iterdir() if re.fullmatch(r".+\.[1-8]", p.name))
HELP_OPTIONS = {"-h", "--help"}


def page_id(path: Path) -> str:
    return path.name


def read(name: str) -> str:
    return (MAN / name).read_text(encoding="utf-8")


def unroff(block: str) -> str:
    r"""The text of an ``.EX`` block as typed: ``\-`` → ``-``, ``\e`` → ``\``,
    the named quote characters, no font changes."""
    text = re.sub(r"\\f(?:\(..|\[[^]]*\]|.)", "", block)
    for escape, char in (
        ("\\(aq", "'"),
        ("\\(dq", '"'),
        ("\\(ga", "`"),
        ("\\-", "-"),
        ("\\&", ""),
        ("\\e", "\\"),
    ):
        text = text.replace(escape, char)
    return text


def examples(body: str) -> list[str]:
    """The ``.EX`` … ``.EE`` blocks of a section, as typed."""
    return [unroff(b) for b in re.findall(r"^\.EX\n(.*?)^\.EE$", body, re.M | re.S)]


def test_there_are_pages() -> None:
    assert {p.name for p in PAGES} >= {"agh.1", "aghd.1", "agh-workflow.5", "agh-protocol.7"}


# -- rendering ----------------------------------------------------------------


@pytest.mark.skipif(shutil.which("groff") is None, reason="groff is not installed")
@pytest.mark.parametrize("path", PAGES, ids=page_id)
def test_page_renders_with_groff_without_warnings(path: Path) -> None:
    proc = subprocess.run(
        ["groff", "-man", "-Tutf8", "-ww", "-z", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr


@pytest.mark.skipif(shutil.which("mandoc") is None, reason="mandoc is not installed")
@pytest.mark.parametrize("path", PAGES, ids=page_id)
def test_page_passes_mandoc_lint(path: Path) -> None:
    # Warnings and worse fail; mandoc's style notes (a long line in an
    # example, say) are taste, not mistakes.
    proc = subprocess.run(
        ["mandoc", "-Tlint", "-W", "warning", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0 and proc.stdout + proc.stderr == "", proc.stdout + proc.stderr


@pytest.mark.parametrize("path", PAGES, ids=page_id)
def test_title_names_the_file(path: Path) -> None:
    # .TH AGH\-WORKFLOW 5 ...: what man(1) shows must match the file it finds.
    th = re.search(r"^\.TH (\S+) (\d)", path.read_text(encoding="utf-8"), re.M)
    assert th is not None, path
    name, section = path.name.rsplit(".", 1)
    assert (th.group(1).replace("\\-", "-").lower(), th.group(2)) == (name, section)


# -- packaging ------------------------------------------------------------------


def data_files() -> dict[str, list[str]]:
    with (ROOT / "pyproject.toml").open("rb") as fh:
        table: dict[str, list[str]] = tomllib.load(fh)["tool"]["setuptools"]["data-files"]
    return table


def test_every_page_is_listed_for_installation_in_its_section() -> None:
    listed = {
        source: directory for directory, sources in data_files().items() for source in sources
    }
    expected = {f"man/{p.name}": f"share/man/man{p.suffix[1:]}" for p in PAGES}
    assert listed == expected


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A wheel built from a copy of the sources (a build in the tree would
    leave build/ behind)."""
    src = tmp_path_factory.mktemp("src")
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    ignore = shutil.ignore_patterns("__pycache__", "*.egg-info")
    for name in ("agh", "aghd", "man"):
        shutil.copytree(ROOT / name, src / name, ignore=ignore)
    out = tmp_path_factory.mktemp("wheel")
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(out), str(src)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    if proc.returncode != 0:
        pytest.fail(f"pip wheel failed:\n{proc.stdout}{proc.stderr}")
    (built,) = out.glob("agh-*.whl")
    return built


def test_the_wheel_carries_every_page_in_its_man_section(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as whl:
        pages = {
            name.split(".data/data/", 1)[1]: whl.read(name)
            for name in whl.namelist()
            if ".data/data/share/man/" in name
        }
    expected = {f"share/man/man{p.suffix[1:]}/{p.name}": p.read_bytes() for p in PAGES}
    assert pages.keys() == expected.keys()
    assert pages == expected


def test_man_finds_every_page_of_an_installed_wheel(wheel: Path, tmp_path: Path) -> None:
    prefix = tmp_path / "prefix"
    # --ignore-installed: else pip uninstalls this environment's agh first.
    install = [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--ignore-installed"]
    install += ["--no-warn-script-location", "--prefix"]
    subprocess.run(
        [*install, str(prefix), str(wheel)], capture_output=True, timeout=300, check=True
    )
    for path in PAGES:
        installed = prefix / "share" / "man" / f"man{path.suffix[1:]}" / path.name
        assert installed.read_bytes() == path.read_bytes(), installed
    if shutil.which("man") is None:
        pytest.skip("man is not installed")
    for path in PAGES:
        name, section = path.name.rsplit(".", 1)
        proc = subprocess.run(
            ["man", "-M", str(prefix / "share" / "man"), "-P", "cat", section, name],
            capture_output=True,
            text=True,
            timeout=60,
            env={**os.environ, "MANWIDTH": "80", "MAN_KEEP_FORMATTING": ""},
            check=False,
        )
        assert proc.returncode == 0, proc.stderr
        text = re.sub(r".\x08", "", proc.stdout)  # no overstrike bold
        assert re.search(rf"^NAME\n\s+{re.escape(name)}\s+[-‐]\s", text, re.M), text[:400]


def installed_from() -> dict[str, Any] | None:
    """The direct_url.json of this environment's agh (None: not installed,
    the tests run from the tree)."""
    purelib = Path(sysconfig.get_paths()["purelib"])
    for info in purelib.glob("agh-*.dist-info"):
        direct = info / "direct_url.json"
        found: dict[str, Any] = json.loads(direct.read_text()) if direct.is_file() else {}
        return found
    return None


def test_this_environment_has_every_page_installed() -> None:
    origin = installed_from()
    if origin is None:
        pytest.skip("agh is not installed in this environment")
    if origin.get("dir_info", {}).get("editable"):
        # setuptools' editable_wheel asks the distribution for has_data(),
        # which does not exist (it is has_data_files()), so an editable
        # wheel silently carries no data files; the wheel tests above show
        # what a real install puts where.
        pytest.skip("agh is an editable install: setuptools installs no data files for it")
    for path in PAGES:
        installed = Path(sys.prefix) / "share" / "man" / f"man{path.suffix[1:]}" / path.name
        assert installed.is_file() and installed.read_bytes() == path.read_bytes(), installed


# -- aghd(1) against the code -----------------------------------------------------


def aghd_sections() -> dict[str, str]:
    return man_sections(read("aghd.1"))


def test_every_option_of_aghd_is_in_options() -> None:
    body = plain(aghd_sections()["OPTIONS"])
    options = [
        opt
        for param in aghd_main.params
        if isinstance(param, click.Option)
        for opt in (*param.opts, *param.secondary_opts)
    ]
    assert "--socket" in options, "the walk over aghd's options is broken"
    missing = [opt for opt in [*options, *HELP_OPTIONS] if not mentions(body, opt)]
    assert missing == []


def test_every_variable_an_option_reads_is_in_environment() -> None:
    body = aghd_sections()["ENVIRONMENT"]
    documented = set(re.findall(r"^\.BR? ([A-Z_]+)", body, re.M))
    read_by_options = {param.envvar for param in aghd_main.params if isinstance(param.envvar, str)}
    needed = read_by_options | {
        "AGH_SOCKET",
        "AGH_DB",
        "AGH_CONFIG",
        "XDG_RUNTIME_DIR",
        "NOTIFY_SOCKET",
        "LISTEN_FDS",
        "JOURNAL_STREAM",
    }
    assert sorted(needed - documented) == []


def setting_entries() -> dict[str, str]:
    """``.TP`` / ``.B name`` entries of CONFIGURATION's Settings, as plain text."""
    body = aghd_sections()["CONFIGURATION"].split("\n.SS Settings\n", 1)[1]
    parts = re.split(r"^\.TP\n\.B ([a-z_]+)\n", body, flags=re.M)
    return {name: plain(text) for name, text in zip(parts[1::2], parts[2::2], strict=True)}


# Computed from the environment: the page shows how, not one user's path.
PATH_DEFAULTS = {
    "socket_path": "$AGH_SOCKET if set, else $XDG_RUNTIME_DIR/agh/agh.sock",
    "db_path": "$AGH_DB if set, else ~/.local/state/agh/agh.db",
}
RESTART = "Applies at the next start."


def test_every_setting_is_listed_once_in_the_order_of_the_table() -> None:
    assert list(setting_entries()) == list(settings.SETTINGS)


@pytest.mark.parametrize("name", list(settings.SETTINGS))
def test_each_setting_shows_its_default_and_whether_it_needs_a_restart(name: str) -> None:
    setting = settings.SETTINGS[name]
    text = " ".join(setting_entries()[name].split())
    if name in PATH_DEFAULTS:
        assert f"Default: {PATH_DEFAULTS[name]}." in text
    else:
        shown = re.search(r"Default: (\S+?)[.;,]?(?=\s|$)", text)
        assert shown is not None, f"{name}: no 'Default: <value>'"
        default = setting.default()
        expected = list(default) if isinstance(default, tuple) else default
        assert yaml.safe_load(shown.group(1)) == expected, name
        assert type(yaml.safe_load(shown.group(1))) in (type(expected), int), name
    assert (RESTART in text) == setting.restart, f"{name}: restart is {setting.restart}"


def test_the_configuration_example_is_a_valid_file() -> None:
    body = aghd_sections()["CONFIGURATION"]
    first, broken, message = examples(body)[:3]
    assert settings.parse(first, "config.yaml").values  # it sets something
    with pytest.raises(ConfigError) as info:
        settings.parse(broken, "/home/me/.config/agh/config.yaml")
    assert f"aghd: {info.value.message}" == " ".join(message.split())


def test_exit_status_lists_the_codes_aghd_uses() -> None:
    from aghd.main import EXIT_ALREADY_RUNNING

    body = aghd_sections()["EXIT STATUS"]
    documented = [int(c) for c in re.findall(r"^\.TP\n\.B (\d+)$", body, re.M)]
    assert documented == sorted({0, 1, 2, EXIT_ALREADY_RUNNING})


# -- agh-workflow(5) against the parser ---------------------------------------------


def workflow_sections() -> dict[str, str]:
    return man_sections(read("agh-workflow.5"))


def page_variables() -> dict[str, Any]:
    """The ``--var NAME=VALUE`` the page's own commands pass."""
    text = unroff(read("agh-workflow.5"))
    return dict(re.findall(r"--var ([A-Za-z_][\w-]*)=(\S+)", text))


def test_every_example_workflow_parses_and_plans() -> None:
    files = [e for e in examples(workflow_sections()["EXAMPLES"]) if e.startswith("name:")]
    assert len(files) >= 2
    for text in files:
        plan = workflows.to_plan(workflows.parse(text, page_variables()))
        assert plan.steps, text


def test_the_fan_out_example_has_the_levels_the_page_states() -> None:
    files = [e for e in examples(workflow_sections()["EXAMPLES"]) if e.startswith("name:")]
    (nightly,) = [f for f in files if f.startswith("name: Nightly report")]
    plan = workflows.to_plan(workflows.parse(nightly, {}))
    assert [level.steps for level in plan.levels] == [
        ["fetch-sales", "fetch-traffic"],
        ["checks.totals"],
        ["checks.outliers"],
        ["report"],
    ]
    (report,) = [s for s in plan.steps if s.id == "report"]
    assert report.depends_on == ["checks.totals", "checks.outliers"]


def test_the_error_example_is_what_the_parser_says() -> None:
    body = workflow_sections()["ERRORS"]
    form, broken, message = examples(body)
    assert form.strip() == "workflow YAML line L, column C: problem; what to do"
    with pytest.raises(InvalidParams) as info:
        workflows.parse(broken, {})
    assert info.value.message == " ".join(message.split())
    assert info.value.details["field"] == "$.params.yaml"


def test_every_key_the_parser_accepts_is_described() -> None:
    from aghd.workflows import validate

    sections = workflow_sections()
    top = set(re.findall(r"^\.BR? (\w+)", sections["TOP\\-LEVEL KEYS"], re.M))
    step = {
        word
        for line in re.findall(r"^\.TP\n\.BR? (.+)$", sections["STEP KEYS"], re.M)
        for word in re.findall(r"\w+", line)
    }
    assert set(validate._TOP_KEYS) <= top
    assert set(validate._STEP_KEYS) <= step
    assert set(validate.ACTIONS) | {"branch"} <= step
    conditions = plain(sections["CONDITIONS"])
    assert all(mentions(conditions, op) for op in validate.CONDITION_OPS)


def test_the_protocol_page_points_to_the_workflow_page() -> None:
    text = read("agh-protocol.7")
    workflows_section = man_sections(text)["WORKFLOWS"]
    assert ".BR agh\\-workflow (5)" in workflows_section
    # The format lives in one page: the key reference is not repeated here.
    assert "\n.B depends_on\nA step id" not in workflows_section
    assert "workflows.compose" in workflows_section

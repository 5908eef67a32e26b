"""The README, followed as a newcomer would: its install command, run as
written in a fresh home directory, puts ``agh`` and ``aghd`` on the PATH;
its "Try it" block then works (the first command starting aghd); the
systemd step writes units naming that installation; its man pages are
found where it says; its configuration example is a valid file; and its
test command is what CI runs (so a green CI proves the README)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from agh.settings import parse
from tests.helpers.cli import clean_environ

if TYPE_CHECKING:
    from collections.abc import Iterator

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text(encoding="utf-8")


def blocks(lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.+?)\n```", README, flags=re.S)


def block_after(heading: str, lang: str = "sh") -> str:
    """The first ``lang`` block of the README section ``heading``."""
    section = README.split(f"\n## {heading}\n", 1)[1].split("\n## ", 1)[0]
    found = re.search(rf"```{lang}\n(.+?)\n```", section, flags=re.S)
    assert found, heading
    return found.group(1)


def test_the_readme_starts_with_install_then_start_then_the_test_command() -> None:
    install, start, tests = blocks("sh")[:3]
    assert "pip install" in install and "aghd" in install
    assert "agh daemon install-unit" in start and "systemctl --user" in start
    assert "pytest" in tests


def test_ci_runs_the_readme_test_command() -> None:
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    assert blocks("sh")[2] in ci


def test_the_configuration_example_is_a_valid_file() -> None:
    values = parse(block_after("Configure", "yaml"), "README.md").values
    assert values == {
        "default_lease_ms": 600_000,
        "default_max_attempts": 3,
        "stuck_after_ms": 300_000,
    }


class Home:
    """A fresh home directory with the README's install done in it."""

    def __init__(self, root: str) -> None:
        self.home = os.path.join(root, "home")
        os.makedirs(self.home)
        runtime = tempfile.mkdtemp(prefix="aghrt", dir="/tmp")  # short: a socket lives here
        self.runtime = runtime
        self.env = clean_environ(
            HOME=self.home,
            PATH=f"{self.home}/.local/bin:/usr/local/bin:/usr/bin:/bin",
            XDG_RUNTIME_DIR=runtime,
            AGH_AUTOSTART="1",  # as a newcomer has it: the first command starts aghd
        )
        for name in ("XDG_CONFIG_HOME", "XDG_STATE_HOME", "XDG_DATA_HOME", "VIRTUAL_ENV"):
            self.env.pop(name, None)

    def sh(self, script: str, cwd: str | None = None, timeout: float = 120) -> str:
        proc = subprocess.run(
            ["bash", "-euo", "pipefail", "-c", script],
            cwd=cwd or self.home,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        assert proc.returncode == 0, (
            f"{script}\n--- stdout\n{proc.stdout}\n--- stderr\n{proc.stderr}"
        )
        return proc.stdout


def copy_of_sources(dest: str) -> str:
    """The checkout as a newcomer has it (no venv, no build output)."""
    src = os.path.join(dest, "agh-src")
    ignore = shutil.ignore_patterns(
        ".venv", ".git", "__pycache__", "*.egg-info", "build", ".mypy_cache", ".ruff_cache"
    )
    shutil.copytree(ROOT, src, ignore=ignore)
    return src


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Home]:
    root = str(tmp_path_factory.mktemp("newcomer"))
    home = Home(root)
    home.sh(block_after("Install and start"), cwd=copy_of_sources(root), timeout=600)
    yield home
    subprocess.run(
        ["agh", "daemon", "stop"], env=home.env, capture_output=True, timeout=60, check=False
    )
    shutil.rmtree(home.runtime, ignore_errors=True)


@pytest.mark.slow
def test_the_install_command_puts_agh_and_aghd_on_the_path(installed: Home) -> None:
    venv_bin = os.path.join(installed.home, ".local/share/agh/venv/bin")
    for name in ("agh", "aghd"):
        link = os.path.join(installed.home, ".local/bin", name)
        assert os.path.realpath(link) == os.path.realpath(os.path.join(venv_bin, name))
    assert installed.sh("agh --version; aghd --version").count("0.") == 2


@pytest.mark.slow
def test_the_try_it_block_works_with_the_first_command_starting_aghd(installed: Home) -> None:
    out = installed.sh(block_after("Try it"))
    assert "write the changelog" in out
    assert re.search(r"completed", out), out
    assert os.path.exists(os.path.join(installed.runtime, "agh", "agh.sock"))


@pytest.mark.slow
def test_the_systemd_step_writes_units_naming_this_installation(installed: Home) -> None:
    step = block_after("Install and start", "sh")
    start = blocks("sh")[1]
    assert step != start
    first = start.split("&&")[0].strip()
    assert first == "agh daemon install-unit"
    installed.sh(first)
    unit = Path(installed.home, ".config/systemd/user/aghd.service").read_text()
    aghd = os.path.join(installed.home, ".local/share/agh/venv/bin/aghd")
    assert re.search(rf"^ExecStart={re.escape(aghd)}\b", unit, flags=re.M), unit
    assert Path(installed.home, ".config/systemd/user/aghd.socket").exists()


@pytest.mark.slow
@pytest.mark.skipif(
    shutil.which("man") is None, reason="man is not installed (apt-get install man-db)"
)
def test_the_man_pages_are_where_the_readme_says(installed: Home) -> None:
    export, _pages = block_after("Man pages and completions").splitlines()
    for page in ("agh", "aghd", "5 agh-workflow", "7 agh-protocol"):
        out = installed.sh(f"{export}\nMANWIDTH=80 man -P cat {page}")
        assert "NAME" in out and page.split()[-1] in out, page

"""Reading roff man pages in tests: sections, plain text, whole-word mentions."""

from __future__ import annotations

import re


def man_sections(text: str) -> dict[str, str]:
    """``.SH`` name → its body (up to the next ``.SH``)."""
    parts = re.split(r'^\.SH "?(.+?)"?$', text, flags=re.M)
    return {name: body for name, body in zip(parts[1::2], parts[2::2], strict=True)}


def plain(roff: str) -> str:
    r"""Roff source as the words a reader sees: ``\-`` → ``-``, no font
    changes or zero-width escapes, so ``\fB\-\-json\fR`` reads ``--json``."""
    text = re.sub(r"\\f(?:\(..|\[[^]]*\]|.)", "", roff)
    return text.replace("\\&", "").replace("\\-", "-")


def mentions(text: str, option: str) -> bool:
    """``option`` as a whole word: ``-o`` is not found in ``--output``."""
    return re.search(rf"(?<![\w-]){re.escape(option)}(?![\w-])", text) is not None

"""TES wildcard output paths: POSIX pattern matching and ``path_prefix`` naming (pure, stdlib).

TES 1.1 lets ``tesOutput.path`` hold the wildcards of IEEE Std 1003.1-2017 §2.13 (pattern
matching notation); every matching file is uploaded to ``url`` + its path with ``path_prefix``
removed. What this module implements of §2.13, as filename expansion does it (§2.13.3):

- ``*`` any string, ``?`` any one character, ``[...]`` a bracket expression (``[!...]``
  negates; ``[^...]`` does too, as in bash; ranges ``a-z``; classes ``[:alpha:]`` and the other
  eleven POSIX ones); ``\\`` makes the next character literal.
- Patterns match one path component each: a ``/`` is matched only by a ``/`` in the pattern,
  and a name starting with ``.`` only by a pattern component starting with a literal ``.``.
- ``**`` is two ``*``: no recursion into subdirectories (not POSIX). A directory that matches is
  uploaded whole instead (every file below it).

The agent (``cpnet.agent.staging``) walks the work dir with `compile_pattern`; the hub refuses
at creation what can be known then (`check_output`). Nothing here does I/O.
"""

from __future__ import annotations

import posixpath
import re
from collections.abc import Iterable
from dataclasses import dataclass

TYPE_CHECKING = False  # not typing's: the runner imports this module (staging) and must start fast
if TYPE_CHECKING:
    from typing import Any

MAX_MATCHES = 10_000  # files one wildcard output may upload (directories matched count their files)

_CLASSES = {
    "alpha": "a-zA-Z",
    "digit": "0-9",
    "alnum": "a-zA-Z0-9",
    "upper": "A-Z",
    "lower": "a-z",
    "space": r" \t\n\r\f\v",
    "blank": r" \t",
    "xdigit": "0-9A-Fa-f",
    "punct": re.escape("!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~"),
    "cntrl": r"\x00-\x1f\x7f",
    "print": r"\x20-\x7e",
    "graph": r"\x21-\x7e",
}


class PatternError(ValueError):
    """A pattern that cannot be used; the message says why."""


@dataclass(frozen=True, slots=True)
class Component:
    """One ``/``-separated part of a pattern: a literal name or a compiled wildcard."""

    text: str  # as written (escapes included)
    literal: str | None  # the name, when the component has no wildcard
    regex: re.Pattern[str] | None  # when it has one

    def matches(self, name: str) -> bool:
        if self.literal is not None:
            return name == self.literal
        assert self.regex is not None
        return self.regex.fullmatch(name) is not None


def _bracket(text: str, start: int) -> tuple[str, int] | None:
    """The regex of the bracket expression opening at text[start] == '[' and the index after
    it, or None when no ']' closes it (then '[' is an ordinary character, as POSIX says)."""
    i = start + 1
    negate = i < len(text) and text[i] in "!^"
    if negate:
        i += 1
    items: list[str] = []
    first = True
    while i < len(text):
        c = text[i]
        if c == "]" and not first:
            body = "".join(items)
            return (f"[^{body}]" if negate else f"[{body}]"), i + 1
        first = False
        if c == "[" and i + 1 < len(text) and text[i + 1] in ":=.":
            kind = text[i + 1]
            end = text.find(kind + "]", i + 2)
            if end < 0:
                return None
            name = text[i + 2 : end]
            if kind != ":":
                raise PatternError(f"[{kind}{name}{kind}] (collating elements) is not supported")
            if name not in _CLASSES:
                raise PatternError(f"unknown character class [:{name}:]")
            items.append(_CLASSES[name])
            i = end + 2
            continue
        if c == "\\" and i + 1 < len(text):
            i += 1
            c = text[i]
        if i + 2 < len(text) and text[i + 1] == "-" and text[i + 2] != "]":
            hi = text[i + 2]
            if hi == "\\" and i + 3 < len(text):
                hi = text[i + 3]
                i += 1
            if hi < c:
                raise PatternError(f"range {c}-{hi} is backwards")
            items.append(f"{re.escape(c)}-{re.escape(hi)}")
            i += 3
            continue
        items.append(re.escape(c))
        i += 1
    return None


def compile_component(text: str) -> Component:
    """Compile one path component; PatternError for a bracket expression we cannot use."""
    out: list[str] = []
    literal: list[str] = []
    wild = False
    i = 0
    while i < len(text):
        c = text[i]
        if c == "\\" and i + 1 < len(text):
            out.append(re.escape(text[i + 1]))
            literal.append(text[i + 1])
            i += 2
            continue
        if c == "*":
            if not out or out[-1] != "[^/]*":  # ** is *
                out.append("[^/]*")
            wild = True
        elif c == "?":
            out.append("[^/]")
            wild = True
        elif c == "[" and (found := _bracket(text, i)) is not None:
            out.append(found[0])
            wild = True
            i = found[1]
            continue
        else:
            out.append(re.escape(c))
            literal.append(c)
        i += 1
    if not wild:
        return Component(text, "".join(literal), None)
    # A leading '.' is matched only by a literal '.' (so '*' skips dotfiles and temp files).
    guard = "" if text.startswith(".") or text.startswith("\\.") else r"(?!\.)"
    return Component(text, None, re.compile(guard + "".join(out), re.DOTALL))


def compile_pattern(path: str) -> list[Component]:
    """The components of a task path pattern (``/`` and ``.`` parts dropped)."""
    return [compile_component(p) for p in path.split("/") if p not in ("", ".")]


def has_wildcards(path: str) -> bool:
    """Whether `path` holds an unescaped ``*``, ``?`` or bracket expression (a bad bracket
    expression counts: compiling it tells the user why)."""
    try:
        return any(c.literal is None for c in compile_pattern(path))
    except PatternError:
        return True


def _norm(path: str) -> str:
    """A task path or prefix without its leading ``/`` (task paths are re-rooted in the work
    dir, so ``/data`` and ``data`` are the same) and with ``//`` and ``/./`` folded."""
    return posixpath.normpath("/" + path).lstrip("/")


def _literal_head(path: str) -> str:
    """The literal text of `path` before its first wildcard, escapes resolved."""
    head: list[str] = []
    for part in (p for p in path.split("/") if p not in ("", ".")):
        comp = compile_component(part)
        if comp.literal is not None:
            head.append(comp.literal + "/")
            continue
        i = 0
        while i < len(part) and part[i] not in "*?[":
            if part[i] == "\\" and i + 1 < len(part):
                i += 1
            head.append(part[i])
            i += 1
        break
    return "".join(head)


def prune(matched: str, prefix: str) -> str:
    """The name a matched file gets under the output URL: its task path without `prefix`, and
    without the ``/`` that may then lead. ValueError when `prefix` does not start the path or
    leaves nothing."""
    m, p = _norm(matched), _norm(prefix)
    if not m.startswith(p):
        raise ValueError(f"path_prefix {prefix!r} is not a prefix of the matched path {matched!r}")
    rel = m[len(p) :].lstrip("/")
    if not rel:
        raise ValueError(f"path_prefix {prefix!r} leaves no name of the matched path {matched!r}")
    return rel


def check_output(path: str, prefix: str | None, url: str = "") -> tuple[str, str] | None:
    """What the hub can refuse when an output is created: (field, reason), or None when fine.

    Only wildcard paths are checked (the spec ignores ``path_prefix`` otherwise).
    """
    try:
        comps = compile_pattern(path)
    except PatternError as exc:
        return "path", str(exc)
    if all(c.literal is not None for c in comps):
        return None
    if url.split(":", 1)[0].lower() in ("http", "https"):
        return "path", (
            "a wildcard path uploads every file it matches: its url must be a directory under "
            "file://, s3:// or cpnet://blobs/, not http(s) (one URL per file)"
        )
    if comps[0].literal is None or len(comps) == 1:
        return "path", (
            "a wildcard path needs a literal first directory (e.g. /data/*.txt): it is bound "
            "into the container, a pattern cannot be"
        )
    if prefix is None:
        return "path_prefix", "required when path contains wildcards (TES 1.1)"
    if "\x00" in prefix or ".." in prefix.split("/"):
        return "path_prefix", "must not contain NUL or '..'"
    raw = _literal_head(path)
    head = _norm(raw) + ("/" if raw.endswith("/") else "")
    p = _norm(prefix)
    if not (head.startswith(p) or p.startswith(head)):
        return "path_prefix", (
            f"{prefix!r} is not a prefix of path {path!r}: no file the pattern matches can "
            "start with it"
        )
    return None


def first_problem(outputs: Iterable[Any]) -> tuple[str, str] | None:
    """The first output of a new task the hub refuses: (``outputs.N.<field>``, reason).

    Checked when a task is created, not in the schema: a task stored before these rules stays
    readable (the agent refuses it at stage-out instead).
    """
    for i, out in enumerate(outputs):
        problem = check_output(out.path, out.path_prefix, out.url)
        if problem is not None:
            return f"outputs.{i}.{problem[0]}", problem[1]
    return None

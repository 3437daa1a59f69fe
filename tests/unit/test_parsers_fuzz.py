"""Every parser of text that comes from outside, fed anything (issue 14, item 7): it answers
or raises its own documented error — never another exception (which the API would turn into a
500, or a trace loader into a crash). The HTTP side is tests/integration/test_fuzz.py."""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from cpnet import ident
from cpnet.agent.staging import urls
from cpnet.sim import traces
from cpnet.tasks import wildcards
from cpnet.tasks.model import Input, Output, TaskSpec

TEXT = st.text(max_size=300)
# Text shaped like what the parsers look for, so the interesting branches are reached.
URLISH = st.builds(
    lambda scheme, rest: f"{scheme}{rest}",
    st.sampled_from(
        ["", "http://", "https://", "s3://", "file://", "cpnet://blobs/", "ftp:", "://"]
    ),
    st.text(alphabet=st.characters(codec="utf-8"), max_size=120),
)
PATTERN = st.text(alphabet="ab/*?[]!-:^.\\x{}", max_size=40)


@given(TEXT | st.from_regex(r"[a-z0-9.]{0,40}\.[gipesn]\.[a-z0-9]{1,5}", fullmatch=True))
def test_identifiers(text: str) -> None:
    try:
        parsed = ident.parse(text)
    except ident.IdentifierError as err:
        assert err.message
    else:
        assert ident.parse(str(parsed)) == parsed  # what parses, round-trips
    assert isinstance(ident.is_valid(text), bool)


@given(URLISH, st.sampled_from(["in.txt", "/abs", "../up", "a/b", ""]))
def test_input_and_output_urls(url: str, path: str) -> None:
    for model, data in (
        (Input, {"url": url, "path": path or "x"}),
        (Output, {"url": url, "path": path or "x"}),
    ):
        try:
            model.model_validate(data)
        except ValidationError:
            pass


@given(URLISH)
def test_the_agents_url_helpers(url: str) -> None:
    assert isinstance(urls.scheme_of(url), str)
    assert isinstance(urls.strip_fragment(url), str)
    try:
        shown = urls.shown(url)
    except ValueError:  # urlsplit's own refusal (an invalid IPv6 netloc)
        return
    assert isinstance(shown, str)
    if url.startswith(("http://", "https://")) and "user:pw@" in url:
        assert "pw@" not in shown  # credentials are never shown


@given(PATTERN, st.one_of(st.none(), PATTERN))
def test_wildcard_outputs(path: str, prefix: str | None) -> None:
    try:
        wildcards.compile_pattern(path)
    except wildcards.PatternError:
        pass
    problem = wildcards.check_output(path, prefix, "file:///out/")
    assert problem is None or (isinstance(problem[0], str) and problem[1])


@given(st.lists(TEXT, max_size=8))
@settings(suppress_health_check=[HealthCheck.function_scoped_fixture], max_examples=60)
def test_trace_lines(lines: list[str]) -> None:
    """A trace file of arbitrary lines loads (bad lines skipped, counted) or raises TraceError."""
    body = "\n".join(lines) + "\n"
    with tempfile.TemporaryDirectory() as d:
        for fmt, name, mapping in (
            ("swf", "t.swf", None),
            ("alibaba2023", "t.csv", None),
            ("alibaba2025", "t.csv", None),
            ("csv", "g.csv", {"submit": "a", "runtime": "b", "cores": "c"}),
        ):
            p = Path(d) / name
            p.write_text(body, encoding="utf-8")
            try:
                t = traces.load(str(p), fmt, mapping=mapping)
            except traces.TraceError:
                continue
            assert all(j.runtime_s >= 0 for j in t.jobs)


@given(
    st.dictionaries(
        st.sampled_from(["executors", "inputs", "outputs", "resources", "tags"]),
        st.recursive(
            st.none() | st.booleans() | st.integers() | st.text(max_size=20),
            lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=8), c, max_size=3),
            max_leaves=10,
        ),
    )
)
def test_task_specs(data: dict) -> None:
    try:
        TaskSpec.model_validate(data)
    except ValidationError:
        pass


def test_the_strategies_reach_valid_input() -> None:
    """The generators above are not all noise: they reach accepted values too."""
    assert ident.is_valid(str(ident.make(["cn", "gd", "x"], ident.IdType.NONE)))
    Input.model_validate({"url": "https://example.org/a", "path": "in.txt"})
    wildcards.compile_pattern("a/*.txt")
    with pytest.raises(traces.TraceError):
        traces.load("/nonexistent/trace.swf", "swf")

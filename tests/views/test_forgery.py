"""Recorded data cannot add structure to a view, or flood it (reliability issue, item 7).

Op types, error types, messages and context values come from the code being
observed (an exception message can hold anything). Each view shows them as
text: one line, no markup, long text cut with an ellipsis.
"""

from __future__ import annotations

import html
import re

import attrs
from hypothesis import given, settings
from hypothesis import strategies as st

from learnkit._views import format as fmt
from learnkit._views.render import (
    _code,
    _inline,
    _md,
    dashboard_text,
    report_html,
    report_markdown,
)

from .test_render import CLUSTER, PATTERN, RECOMMENDATION, parse, snapshot, summary

FORGE = ("deploy\n# Forged heading\n| x | y | z |\n- forged item\r\n\u2028## also forged "
         "**bold** <b>tag</b> [link](http://example.invalid) `code` \x1b[2J_emph_ &amp;")


def hostile_snapshot(text: str = FORGE, *, long: int = 0):  # type: ignore[no-untyped-def]
    template = text + ("x" * long)
    return snapshot(
        by_type={text: snapshot().by_type["process_issue"]},
        summary=summary(
            failure_patterns=[attrs.evolve(PATTERN, op_type=text, description=text,
                                           attribute=text, value=text)],
            error_clusters=[attrs.evolve(CLUSTER, error_type=text, template=template,
                                         example=template, op_types={text: 60})],
            recommendations=[attrs.evolve(RECOMMENDATION, threshold=None, recommended=None,
                                          message=text)]),
        durations={text: {50.0: 1.0}},
    )


def headings(md: str) -> list[str]:
    return [line for line in md.splitlines() if line.startswith("#")]


def cells(row: str) -> int:
    """Cells of a Markdown table row: split on pipes that are not escaped."""
    return len(re.split(r"(?<!\\)\|", row.strip()[1:-1]))


class TestMarkdown:
    def test_data_adds_no_heading_row_or_list_item(self) -> None:
        for detailed in (False, True):
            benign = report_markdown(hostile_snapshot("deploy"), detailed=detailed)
            md = report_markdown(hostile_snapshot(), detailed=detailed)
            # The same document shape: as many lines, the same kinds of line.
            assert len(md.splitlines()) == len(benign.splitlines())
            assert len(headings(md)) == len(headings(benign))
            assert not any("Forged" in h and h.startswith("# ") for h in headings(md))
            for line, ref in zip(md.splitlines(), benign.splitlines(), strict=True):
                assert line[:2] == ref[:2], (line, ref)
                if line.startswith("|"):
                    assert cells(line) == cells(ref), line

    def test_long_text_is_cut_with_an_ellipsis(self) -> None:
        md = report_markdown(hostile_snapshot("Timeout", long=3900), detailed=True)
        assert max(len(line) for line in md.splitlines()) < 800
        assert fmt.ELLIPSIS in md

    def test_no_control_characters(self) -> None:
        md = report_markdown(hostile_snapshot(), detailed=True)
        assert not re.search("[\x00-\x09\x0b-\x1f\x7f-\x9f\u2028\u2029]", md)


class TestHtml:
    def test_data_is_text_not_markup(self) -> None:
        for detailed in (False, True):
            benign = parse(report_html(hostile_snapshot("deploy"), detailed=detailed))
            p = parse(report_html(hostile_snapshot(), detailed=detailed))
            assert p.errors == [] and p.stack == []
            # The data brings no element of its own: the same tags, in the same order.
            assert p.tags == benign.tags
            text = "".join(p.text)
            assert "**bold** <b>tag</b> [link](http://example.invalid)" in text
            assert "&amp;" in text  # an entity in data stays the characters typed
            assert "\x1b" not in text


class TestText:
    def test_dashboard_lines_and_escapes(self) -> None:
        benign = dashboard_text(hostile_snapshot("deploy"))
        out = dashboard_text(hostile_snapshot())
        assert len(out.splitlines()) == len(benign.splitlines())
        assert "\x1b" not in out and "\r" not in out

    def test_one_line(self) -> None:
        assert fmt.one_line("a\nb\r\n\tc\x1b[0m") == "a b c [0m"
        assert fmt.one_line("abcdef", 4) == "abc" + fmt.ELLIPSIS
        assert fmt.one_line("abcd", 4) == "abcd"


def _shown(rendered_html: str) -> str:
    """What a browser shows for our inline HTML: tags dropped, entities decoded."""
    return html.unescape(re.sub(r"</?(code|strong)>", "", rendered_html))


@settings(max_examples=400, deadline=None)
@given(st.text())
def test_any_text_renders_as_itself(text: str) -> None:
    """Escaping round-trips: the page shows exactly the one-line text, and no element."""
    expected = fmt.one_line(text)
    as_text = _inline(_md(text))
    assert "<strong>" not in as_text and "<code>" not in as_text
    assert _shown(as_text) == expected
    as_code = _inline(_code(text))
    assert as_code.startswith("<code>") and as_code.count("<code>") == 1
    assert _shown(as_code) == expected.replace("`", "'")
    assert "\n" not in _md(text) and "\n" not in _code(text)

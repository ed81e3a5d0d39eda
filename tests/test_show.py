"""The Markdown twin of a DataFrame parses back, through MyST's own parser, to the same cells."""

from __future__ import annotations

import numpy as np
import pandas as pd
from markdown_it import MarkdownIt

from wspec.show import to_markdown


def _cells(markdown: str) -> list[list[str]]:
    """Rows of plain cell text, as MyST (markdown-it with tables) reads the table."""
    tokens = MarkdownIt("commonmark").enable("table").parse(markdown)
    rows, row = [], None
    for tok in tokens:
        if tok.type == "tr_open":
            row = []
        elif tok.type == "inline" and row is not None:
            text = "".join(c.content for c in tok.children if c.type in ("text", "code_inline"))
            row.append(text)
        elif tok.type == "tr_close":
            rows.append(row)
            row = None
    return rows


def test_markup_characters_survive_as_text():
    frame = pd.DataFrame(
        {
            "component": ["dec_cross_attn", "a|b"],
            "cell": ["−39.47%* [−55.66, −23.14] n=12/18", "$x$ <b> `c`"],
            "value": [0.123456789, np.nan],
        }
    )
    rows = _cells(to_markdown(frame))
    assert rows[0] == ["component", "cell", "value"]
    assert rows[1] == ["dec_cross_attn", "−39.47%* [−55.66, −23.14] n=12/18", "0.1235"]
    assert rows[2] == ["a|b", "$x$ <b> `c`", "—"]


def test_named_and_multi_indexes_become_columns():
    frame = pd.DataFrame(
        {"model": ["tiny.en", "tiny.en", "base"], "metric": ["n_eff", "alpha", "n_eff"]}
    ).assign(value=[1.0, 2.0, 3.0])
    wide = frame.pivot_table(index="model", columns="metric", values="value")
    rows = _cells(to_markdown(wide))
    assert rows[0] == ["model", "alpha", "n_eff"]
    assert rows[1:] == [["base", "—", "3"], ["tiny.en", "2", "1"]]
    stacked = frame.set_index(["model", "metric"])
    assert _cells(to_markdown(stacked))[0] == ["model", "metric", "value"]
    grouped = frame.drop(columns="metric").groupby("model").agg(["mean", "max"])
    assert _cells(to_markdown(grouped))[0] == ["model", "value / mean", "value / max"]


def test_range_index_is_not_shown():
    rows = _cells(to_markdown(pd.DataFrame({"a": [1, 2]})))
    assert rows == [["a"], ["1"], ["2"]]


def test_plain_text_has_no_quotes_or_marks():
    from IPython.core.formatters import PlainTextFormatter

    from wspec.show import Plain, unmarked

    fmt = PlainTextFormatter()
    assert fmt(Plain("not confirmed")) == "not confirmed"
    assert fmt("not confirmed") == "'not confirmed'"  # why Plain exists
    assert unmarked("`tiny.en`: −39.5 % [−55.7, −23.1] → *confirmed*").text == (
        "tiny.en: −39.5 % [−55.7, −23.1] → confirmed"
    )

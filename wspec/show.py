"""How the book shows tables and cross-page values in both HTML and the PDF.

A DataFrame offers HTML (for the web pages) and plain text. The LaTeX builder cannot use the
HTML, so without help every table in the PDF is a monospaced `repr` that wraps mid-row. A
Markdown pipe table is parsed by MyST into an ordinary docutils table, which Sphinx typesets
as a LaTeX table. `register()` adds that Markdown representation to every DataFrame shown in
a kernel; `_config.yml` ranks it above plain text for LaTeX only, so HTML keeps pandas' tables.

Values glued for *other* pages (`{glue:text}`results.md::key``) travel as text/plain only,
and a glued `str` arrives with its quotes; `Plain` carries the bare text.
"""

from __future__ import annotations

import re

import pandas as pd

# Characters that MyST would read as markup inside a cell: emphasis, tables, math, links, HTML.
_MARKUP = re.compile(r"([\\`*_|$\[\]<>{}])")


def _escape(value: object) -> str:
    text = "—" if value is None or (isinstance(value, float) and value != value) else str(value)
    return _MARKUP.sub(r"\\\1", text).replace("\n", " ")


def _label(name: object) -> str:
    """A column or index label; tuples from MultiIndexes are joined with " / "."""
    if isinstance(name, tuple):
        return " / ".join(str(part) for part in name if str(part))
    return "" if name is None else str(name)


def to_markdown(frame: pd.DataFrame, float_digits: int = 4) -> str:
    """A MyST pipe table of `frame`; a meaningful index becomes leading columns.

    Floats are shown with `float_digits` significant digits, so a table that was not
    rounded by its chapter still fits the page. A frame without rows becomes a sentence: a
    header-only table has no body, which Sphinx's LaTeX writer cannot typeset.
    """
    if frame.empty:
        return "*(This table has no rows in this build.)*"
    shown = frame
    if not isinstance(frame.index, pd.RangeIndex):
        shown = frame.reset_index()
    header = [_label(c) for c in shown.columns]
    rows = []
    for row in shown.itertuples(index=False):
        cells = [
            f"{v:.{float_digits}g}" if isinstance(v, float) and v == v else _escape(v) for v in row
        ]
        rows.append("| " + " | ".join(cells) + " |")
    head = "| " + " | ".join(_escape(h) for h in header) + " |"
    rule = "|" + "|".join(" --- " for _ in header) + "|"
    return "\n".join([head, rule, *rows])


def register() -> None:
    """Give every DataFrame displayed in this IPython kernel a text/markdown representation,
    and show cells and tables uncut.

    Outside IPython (plain scripts, tests) there is nothing to register and this does nothing.
    """
    try:
        from IPython import get_ipython
    except ImportError:
        return
    shell = get_ipython()
    if shell is None:
        return
    shell.display_formatter.formatters["text/markdown"].for_type(pd.DataFrame, to_markdown)
    # pandas cuts cells after 50 characters and tables after 60 rows ("..."); a book's
    # claims and assumptions tables must be read whole.
    pd.set_option("display.max_colwidth", None)
    pd.set_option("display.max_rows", 500)


class Plain:
    """Text whose plain representation is the text itself, for cross-page `glue:text`."""

    def __init__(self, text: str) -> None:
        self.text = text

    def __repr__(self) -> str:
        return self.text


def unmarked(markdown: str) -> Plain:
    """`markdown` without emphasis and code marks, for a text-only cross-page glue."""
    return Plain(re.sub(r"[`*]", "", markdown))

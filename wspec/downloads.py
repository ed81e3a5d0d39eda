"""Sphinx extension: every executed chapter offers its notebook (.ipynb) for download.

sphinx-book-theme's download menu lists the page source (.md) and, for a MyST notebook, the
executed .ipynb, but it copies that notebook into ``_sources/`` only when a launch service
(Binder, JupyterHub, Colab, Thebe) is configured. The book is offline and has none, so this
does the same copy itself, just before the theme builds the menu (priority 500 < 501).
"""

from __future__ import annotations

import shutil
from pathlib import Path

#: Where myst-nb writes the executed notebook of each page, relative to the HTML output folder.
EXECUTED = Path("..") / "jupyter_execute"


def _offer_notebook(app, pagename: str, templatename: str, context: dict, doctree) -> None:
    if context.get("ipynb_source") or not str(context.get("sourcename", "")).endswith(".md"):
        return
    executed = (Path(app.outdir) / EXECUTED / pagename).with_suffix(".ipynb")
    if not executed.is_file():  # a plain Markdown page, not a notebook
        return
    target = (Path(app.outdir) / "_sources" / pagename).with_suffix(".ipynb")
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy2(executed, target)
    context["ipynb_source"] = f"{pagename}.ipynb"


def setup(app) -> dict:
    app.connect("html-page-context", _offer_notebook, priority=500)
    return {"parallel_read_safe": True, "parallel_write_safe": True}

"""The book driver: slugs, the papermill run cache, the runs manifest and the strict build.

Papermill tests execute tiny real notebooks in the project's python3 kernel; the strict-build
tests run the real `jupyter-book build` with this repository's _config.yml on a throw-away book.
The full book build is not a unit test (CI runs it through the Makefile).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import nbformat
import pytest

from wspec import book
from wspec.errors import WspecError

REPO = Path(__file__).resolve().parents[1]
HEADER = """---
jupytext:
  text_representation: {extension: .md, format_name: myst}
kernelspec: {display_name: Python 3, language: python, name: python3}
---
"""

CHAPTER = (
    HEADER
    + """
# Tiny run

```{code-cell} ipython3
:tags: [parameters]
model = "default-model"
factor = 1
out_dir = "."
reduced = True
stimulus_set = "ci"
```

```{code-cell} ipython3
import json, os
from pathlib import Path
result = {"model": model, "answer": 21 * factor, "cwd": os.getcwd(),
          "tqdm_disable": os.environ.get("TQDM_DISABLE")}
Path(out_dir, "result.json").write_text(json.dumps(result))
Path(out_dir, "outputs.json").write_text(json.dumps({"result": "result.json"}))
print("answer", result["answer"])
```
"""
)


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    ("spec", "slug"),
    [
        ("tiny.en", "tiny-en"),
        ("base", "base"),
        ("openai/whisper-large-v3-turbo", "openai-whisper-large-v3-turbo"),
        ("random:tiny", "random-tiny"),
        ("/data/My Models/whisper_small/", "data-my-models-whisper-small"),
    ],
)
def test_slugify_makes_file_safe_names(spec: str, slug: str) -> None:
    assert book.slugify(spec) == slug


def test_slugify_rejects_names_without_letters() -> None:
    with pytest.raises(WspecError, match="no letters or digits"):
        book.slugify(":/.")


def test_execute_run_injects_parameters_caches_and_rekeys(tmp_path: Path) -> None:
    chapter = _write(tmp_path / "book" / "chapter.md", CHAPTER)
    cache = tmp_path / "cache"
    params = {"model": "1.5b", "factor": 2}  # a model named "1.5b" must stay a string

    first = book.execute_run(chapter, params, cwd=chapter.parent, code_hash="c1", cache=cache)
    assert not first.cached
    result = json.loads((first.out_dir / "result.json").read_text())
    assert result == {
        "model": "1.5b",
        "answer": 42,
        "cwd": str(chapter.parent),
        "tqdm_disable": "1",
    }
    nb = nbformat.read(first.notebook, as_version=4)
    tags = [c.metadata.get("tags", []) for c in nb.cells]
    assert ["parameters"] in tags and ["injected-parameters"] in tags
    assert tags.index(["injected-parameters"]) == tags.index(["parameters"]) + 1
    # Only the finished notebook and its metadata are in the run folder: no partial files.
    assert sorted(p.name for p in first.notebook.parent.iterdir()) == [
        "out",
        "run.ipynb",
        "run.json",
    ]

    mtime = first.notebook.stat().st_mtime_ns
    second = book.execute_run(chapter, params, cwd=chapter.parent, code_hash="c1", cache=cache)
    assert second.cached and second.notebook == first.notebook and second.key == first.key
    assert second.notebook.stat().st_mtime_ns == mtime  # papermill was not called again
    assert second.parameters["model"] == "1.5b"

    other_code = book.execute_run(chapter, params, cwd=chapter.parent, code_hash="c2", cache=cache)
    assert not other_code.cached and other_code.key != first.key


def test_failed_run_leaves_no_trusted_notebook(tmp_path: Path) -> None:
    broken = CHAPTER.replace('print("answer"', 'raise RuntimeError("boom"); print("answer"')
    chapter = _write(tmp_path / "book" / "chapter.md", broken)
    cache = tmp_path / "cache"
    with pytest.raises(WspecError, match="RuntimeError: boom"):
        book.execute_run(chapter, {"factor": 1}, cwd=chapter.parent, code_hash="c", cache=cache)
    (folder,) = list(cache.iterdir())
    assert not (folder / "run.ipynb").exists() and not (folder / "run.json").exists()
    assert (folder / "failed.ipynb").is_file()
    assert not list(folder.glob(".run-*"))


def test_parameters_cell_must_be_unique(tmp_path: Path) -> None:
    chapter = _write(tmp_path / "c.md", CHAPTER.replace(":tags: [parameters]\n", "", 1))
    with pytest.raises(WspecError, match="exactly one code cell tagged 'parameters'"):
        book.execute_run(chapter, {}, cwd=tmp_path, code_hash="c", cache=tmp_path / "cache")


def test_run_models_writes_pages_manifest_and_index(tmp_path: Path) -> None:
    _write(tmp_path / "book" / "model_run.md", CHAPTER)
    stale = _write(tmp_path / "book" / "runs" / "old-model.ipynb", "{}")
    manifest = book.run_models(
        ["random:tiny", "openai/whisper-tiny"], reduced=True, root=tmp_path, cache=tmp_path / "c"
    )
    assert not stale.exists()
    assert book.load_runs(tmp_path) == manifest
    assert manifest["reduced"] is True and manifest["stimulus_set"] == "ci"
    run = manifest["runs"][0]
    assert run["model"] == "random:tiny" and run["page"] == "book/runs/random-tiny.ipynb"
    assert run["parameters"]["stimulus_set"] == "ci"
    assert json.loads(Path(run["outputs"]["result"]).read_text())["model"] == "random:tiny"
    page = nbformat.read(tmp_path / run["page"], as_version=4)
    assert page.cells[0].source.startswith("# Tiny run: `random:tiny`")
    index = (tmp_path / "book" / "runs" / "index.md").read_text()
    assert "{doc}`random-tiny`" in index and "{doc}`openai-whisper-tiny`" in index


def test_run_models_rejects_clashing_names(tmp_path: Path) -> None:
    _write(tmp_path / "book" / "model_run.md", CHAPTER)
    with pytest.raises(WspecError, match="same page name"):
        book.run_models(["random:tiny", "random-tiny"], reduced=True, root=tmp_path)


def test_load_runs_says_what_to_do_when_missing(tmp_path: Path) -> None:
    with pytest.raises(WspecError, match="run `wspec book` first"):
        book.load_runs(tmp_path)


def test_repository_toc_has_every_part() -> None:
    files = book.toc_files(REPO)
    assert files[0] == "book/intro"
    assert "book/model_run" not in files  # executed per model by papermill, never as a page
    for chapter in ("book/theory", "book/stress_set", "book/runs/index", "book/results"):
        assert chapter in files
    for chapter in ("book/detection", "book/assignments", "book/status", "book/references"):
        assert chapter in files


# --- strict builds of a throw-away book with the repository's _config.yml ----------------
GOOD_PAGE = HEADER + "\n# Good\n\nSee {ref}`sec-good`.\n\n(sec-good)=\n## Section\n\n$x^2$\n"


def _mini_book(tmp_path: Path, pages: dict[str, str]) -> Path:
    root = tmp_path / "mini"
    root.mkdir()
    shutil.copy(REPO / "_config.yml", root / "_config.yml")
    shutil.copytree(REPO / "_static", root / "_static")  # the book's CSS, named in _config.yml
    _write(root / "book" / "references.bib", (REPO / "book" / "references.bib").read_text())
    names = list(pages)
    toc = f"format: jb-book\nroot: book/{names[0]}\n"
    if len(names) > 1:
        toc += "chapters:\n" + "".join(f"  - file: book/{n}\n" for n in names[1:])
    _write(root / "_toc.yml", toc)
    for name, text in pages.items():
        _write(root / "book" / f"{name}.md", text)
    book.prepare_mathjax(root)
    return root


def _build(root: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        book.jupyter_book_command(root, "html"), cwd=root, capture_output=True, text=True
    )


@pytest.mark.slow
def test_strict_build_passes_a_good_book(tmp_path: Path) -> None:
    code = "\n```{code-cell} ipython3\nprint(6 * 7)\n```\n"
    root = _mini_book(tmp_path, {"intro": GOOD_PAGE + code})
    done = _build(root)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    html = (root / "_build" / "html" / "book" / "intro.html").read_text()
    assert "42" in html and "mathjax/tex-mml-chtml.js" in html


@pytest.mark.slow
def test_strict_build_fails_on_broken_reference_and_missing_figure(tmp_path: Path) -> None:
    broken = GOOD_PAGE + "\nSee {ref}`no-such-label`.\n\n```{figure} missing.png\nA figure.\n```\n"
    root = _mini_book(tmp_path, {"intro": broken})
    done = _build(root)
    log = done.stdout + done.stderr
    assert done.returncode != 0
    assert "no-such-label" in log and "missing.png" in log


@pytest.mark.slow
def test_strict_build_fails_on_a_failing_cell(tmp_path: Path) -> None:
    cell = '\n```{code-cell} ipython3\nraise ValueError("chapter is broken")\n```\n'
    root = _mini_book(tmp_path, {"intro": GOOD_PAGE, "broken": HEADER + "\n# Broken\n" + cell})
    done = _build(root)
    assert done.returncode != 0
    assert "chapter is broken" in done.stdout + done.stderr


def _check_book_module():
    """scripts/check_book.py, imported from its path (it is a script, not a package module)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("check_book", REPO / "scripts" / "check_book.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


VERDICT_PAGE = (
    HEADER
    + """
# Verdicts

```{code-cell} ipython3
from myst_nb import glue
from wspec import show
glue("verdict_C1", show.Plain("not confirmed"), display=False)
glue("verdict_C1_reason", show.unmarked("`tiny.en`: *not confirmed*"), display=False)
```
"""
)


@pytest.mark.slow
def test_cross_page_verdicts_arrive_bare_and_check_book_flags_markup_and_warnings(
    tmp_path: Path,
) -> None:
    intro = GOOD_PAGE + (
        "\n| claim | verdict | why |\n| --- | --- | --- |\n"
        "| C1 | {glue:text}`verdicts.md::verdict_C1:s` "
        "| {glue:text}`verdicts.md::verdict_C1_reason:s` |\n"
    )
    broken = HEADER + "\n# Broken\n\nThe set `{glue:text}`some_key``.\n"
    noisy = (
        HEADER
        + "\n# Noisy\n\n```{code-cell} ipython3\nimport warnings\n"
        + 'warnings.warn("`past_key_values` is deprecated", FutureWarning)\n```\n'
    )
    pages = {"intro": intro, "verdicts": VERDICT_PAGE, "broken": broken, "noisy": noisy}
    root = _mini_book(tmp_path, pages)
    done = _build(root)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    html = (root / "_build" / "html" / "book" / "intro.html").read_text()
    assert ">not confirmed<" in html and "'not confirmed'" not in html
    assert "tiny.en: not confirmed" in html
    check_book = _check_book_module()
    docs = [f"book/{p}" for p in pages]
    problems, found = check_book.check_static(root / "_build" / "html", docs)
    assert len(found) == 4
    assert len(problems) == 2
    assert problems[0].startswith("book/broken: unrendered MyST markup")
    assert problems[1] == "book/noisy: a cell output contains 'FutureWarning:'"


@pytest.mark.slow
def test_pages_offer_md_and_executed_ipynb_and_the_landing_page_the_pdf(tmp_path: Path) -> None:
    """wspec.downloads puts the executed notebook in each page's download menu, wspec.provenance
    the build identity on the landing page; check_book finds every link and flags a dead one."""
    intro = (
        GOOD_PAGE
        + "\nBuilt from {{ build_identity }}.\n\n```{only} html\n"
        + '<a href="../wspec.pdf">PDF</a>\n```\n\n```{code-cell} ipython3\nprint(6 * 7)\n```\n'
    )
    root = _mini_book(tmp_path, {"intro": intro, "plain": "# Plain\n\nNo code here.\n"})
    done = _build(root)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    html_dir = root / "_build" / "html"
    page = (html_dir / "book" / "intro.html").read_text()
    assert re.search(r"Built from commit no git commit, built \d{4}-\d\d-\d\d \d\d:\d\d UTC", page)
    executed = nbformat.read(html_dir / "_sources" / "book" / "intro.ipynb", as_version=4)
    assert any("42" in str(c.get("outputs")) for c in executed.cells)
    check_book = _check_book_module()
    pages = [html_dir / "book" / "intro.html", html_dir / "book" / "plain.html"]
    problems = check_book.check_downloads(root, html_dir, pages, "book/intro", pdf=True)
    assert problems == ["book/intro: download link ../wspec.pdf resolves to no file"]
    (html_dir / "wspec.pdf").write_bytes(b"%PDF-1.5")
    assert check_book.check_downloads(root, html_dir, pages, "book/intro", pdf=True) == []
    (html_dir / "_sources" / "book" / "intro.ipynb").unlink()
    assert check_book.check_downloads(root, html_dir, pages, "book/intro", pdf=True) == [
        "book/intro: download link ../_sources/book/intro.ipynb resolves to no file"
    ]


@pytest.mark.slow
def test_dataframes_reach_html_whole_and_latex_as_real_tables(tmp_path: Path) -> None:
    page = (
        HEADER
        + """
# Tables

```{code-cell} ipython3
import pandas as pd
from wspec import show
show.register()
pd.DataFrame({"component": ["dec_cross_attn"], "cell": ["-39.47%* [-55.66, -23.14]"]})
```

A long cell (a claim's wording) is shown whole, not cut by pandas after 50 characters:

```{code-cell} ipython3
claim = "Under stress the decoder " + "loses effective rank in every small model we ran"
pd.DataFrame({"claim": [claim]})
```

A table with no rows (a speech-only AUROC table in a small build) must not stop the PDF:

```{code-cell} ipython3
pd.DataFrame(columns=["model", "auroc"])
```
"""
    )
    root = _mini_book(tmp_path, {"intro": page})
    done = subprocess.run(
        book.jupyter_book_command(root, "latex"), cwd=root, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    tex = next((root / "_build" / "latex").glob("*.tex")).read_text()
    assert "\\begin{tabulary}" in tex or "\\begin{longtable}" in tex
    assert "dec\\_cross\\_attn" in tex
    assert "Verbatim" not in tex.split("dec\\_cross\\_attn")[0].rsplit("\\begin{", 1)[-1]
    assert "no rows in this build" in tex
    assert "decoder loses effective rank in every small model we ran" in tex  # output, not source
    done = _build(root)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    html = (root / "_build" / "html" / "book" / "intro.html").read_text()
    assert "decoder loses effective rank in every small model we ran" in html


def test_book_env_is_offline_unless_the_user_opts_in(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    env = book.book_env()
    assert env["HF_HUB_OFFLINE"] == env["TRANSFORMERS_OFFLINE"] == "1"
    assert env["TQDM_DISABLE"] == "1"
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    env = book.book_env()
    assert env["HF_HUB_OFFLINE"] == env["TRANSFORMERS_OFFLINE"] == "0"


def test_check_book_fails_on_a_scrolling_table_by_default(tmp_path: Path, monkeypatch) -> None:
    """The browser check's verdict on a page, with Chromium's report stood in for (the probe's
    JSON): a sideways-scrolling table fails by default and only --warn-on-scroll lets it pass;
    --no-pdf ignores the landing page's PDF link, which that build cannot resolve."""
    check_book = _check_book_module()
    page = tmp_path / "html" / "book" / "results.html"
    page.parent.mkdir(parents=True)
    page.write_text("<html><body></body></html>")
    report = {
        "imgs": [],
        "mjx": 0,
        "mjxErrors": 0,
        "mathSources": 0,
        "scrolling": [{"table": "Component | ΔN_eff (%)", "px": 42}],
        "downloads": [{"href": "../wspec.pdf", "bytes": -1}],
    }
    monkeypatch.setattr(check_book, "render", lambda browser, p: report)
    html_dir = tmp_path / "html"
    problems = check_book.check_browser("chromium", html_dir, [page], pdf=False)
    assert problems == [
        "book/results: table [Component | ΔN_eff (%)] scrolls 42 px sideways at 1280 px"
    ]
    assert check_book.check_browser("chromium", html_dir, [page], True, pdf=False) == []
    assert check_book.check_browser("chromium", html_dir, [page], True, pdf=True) == [
        "book/results: download links the browser could not open: ['../wspec.pdf']"
    ]
    with pytest.raises(SystemExit):
        check_book.main(["--fail-on-scroll"])  # the old opt-in flag is gone: failing is default


def test_sync_execution_cache_drops_only_the_changed_chapters(tmp_path: Path, monkeypatch) -> None:
    """A chapter whose imported code changed loses its cached execution; the others keep
    theirs (jupyter-cache records, as myst-nb writes them, keyed by the chapter's path)."""
    from jupyter_cache import get_cache

    root = tmp_path
    (root / "_toc.yml").write_text("format: jb-book\nroot: one\nchapters:\n- file: two\n")
    names = ("one", "two")
    cache = get_cache(root / "_build" / ".jupyter_cache")
    for i, name in enumerate(names):
        (root / f"{name}.md").write_text(f"# {name}\n")
        nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(f"x = {i}")])
        path = root / f"{name}.ipynb"
        nbformat.write(nb, path)
        cache.cache_notebook_file(str(path), uri=str(root / f"{name}.md"), check_validity=False)
    code = {"one": "stats v1", "two": "audio v1"}
    monkeypatch.setattr(book, "chapter_code_hash", lambda chapter, _root: code[chapter.stem])
    monkeypatch.setattr(book, "chapter_code", lambda chapter: "x = 1")

    def cached() -> set[str]:
        return {
            Path(r.uri).stem
            for r in get_cache(root / "_build" / ".jupyter_cache").list_cache_records()
        }

    assert book.sync_execution_cache(root) == ["one", "two"]  # no stamps yet
    assert cached() == set()
    for name in names:  # as if the build executed both again
        cache.cache_notebook_file(
            str(root / f"{name}.ipynb"), uri=str(root / f"{name}.md"), check_validity=False
        )
    assert book.sync_execution_cache(root) == []  # nothing changed: both kept
    assert cached() == {"one", "two"}
    code["one"] = "stats v2"
    assert book.sync_execution_cache(root) == ["one"]
    assert cached() == {"two"}

"""Build identity, reproduction notes and the per-run table of the status page."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from types import SimpleNamespace

from wspec import provenance

REPO = Path(__file__).resolve().parents[1]
# A code cell or a glued figure of a chapter: its header line and its body.
BLOCK = re.compile(r"^```(\{code-cell\}|\{glue:figure\})[^\n]*\n(.*?)^```\n", re.S | re.M)

RUNS = {
    "stimulus_set": "ci",
    "source_hash": "8d03cf76a47042abcd6017047393f77317036ba560939fca02abc0f1e310e3ca",
    "runs": [
        {
            "model": "tiny.en",
            "parameters": {
                "model": "tiny.en",
                "stimulus_set": "ci",
                "reduced": True,
                "out_dir": "x",
            },
            "cache_key": "3b65e44ed50a15e4df89",
            "seconds": 234.4,
        },
        {
            "model": "base",
            "parameters": {"model": "base", "stimulus_set": "ci", "reduced": True, "out_dir": "y"},
            "cache_key": "0123456789abcdef0123",
            "stimulus_hash": "f" * 64,
            "seconds": 500.0,
        },
    ],
}


def _git(repo: Path, *args: str) -> None:
    subprocess.run(
        ["git", "-c", "user.email=t@t", "-c", "user.name=t", *args], cwd=repo, check=True
    )


def test_build_identity_names_commit_dirty_tree_and_date(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1764590400")  # 2025-12-01 12:00 UTC
    _git(tmp_path, "init", "-q")
    (tmp_path / "a.txt").write_text("a")
    _git(tmp_path, "add", "a.txt")
    _git(tmp_path, "commit", "-qm", "first")
    head = subprocess.run(
        ["git", "rev-parse", "--short=12", "HEAD"], cwd=tmp_path, capture_output=True, text=True
    ).stdout.strip()
    assert provenance.build_identity(tmp_path) == f"commit {head}, built 2025-12-01 12:00 UTC"
    (tmp_path / "a.txt").write_text("changed")
    assert f"commit {head} with uncommitted changes" in provenance.build_identity(tmp_path)


def test_outside_git_says_so(tmp_path) -> None:
    assert provenance.git_commit(tmp_path) == "no git commit"


def test_sphinx_extension_sets_title_page_release_and_substitution(tmp_path, monkeypatch):
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "0")
    config = SimpleNamespace(
        release="", version="", latex_elements={"papersize": "a4"}, myst_substitutions={"a": 1}
    )
    provenance._on_config(SimpleNamespace(srcdir=str(tmp_path)), config)
    assert config.release == "commit no git commit, built 1970-01-01 00:00 UTC"
    assert config.latex_elements == {"papersize": "a4", "releasename": "Build:"}
    assert config.myst_substitutions == {"a": 1, provenance.SUBSTITUTION: config.release}


def test_reproduce_note_names_command_chapter_and_runs() -> None:
    data = provenance.run_data(RUNS)
    note = provenance.reproduce("book/results.md", command="wspec table --set ci", data=data)
    assert note.data == (
        "*Reproduce:* `wspec table --set ci` · chapter `book/results.md` · data: model runs "
        "`tiny.en` (cache 3b65e44ed50a), `base` (cache 0123456789ab) on stimulus set `ci` "
        "(`book/runs/runs.json`)."
    )
    assert provenance.reproduce("book/theory.md").data == "*Reproduce:* chapter `book/theory.md`."
    assert "model run `base`" in provenance.run_data(RUNS, ["base"])


def test_run_table_lists_hashes_and_wall_time() -> None:
    table = provenance.run_table(RUNS)
    assert list(table.index) == ["tiny.en", "base"]
    assert table.loc["tiny.en", "stimulus-set hash"] == "not recorded"
    assert table.loc["base", "stimulus-set hash"] == "f" * 16
    assert set(table["code hash"]) == {RUNS["source_hash"][:16]}
    assert table.loc["base", "wall time (s)"] == 500.0
    assert "out_dir" not in table.loc["tiny.en", "parameters"]


def test_every_shown_table_and_figure_has_a_reproduce_note() -> None:
    """Each output shown without its code (a remove-input cell, a glued figure) is followed by
    a `provenance.reproduce` note; a cell that shows its code is its own reproduction line."""
    missing = []
    chapters = sorted((REPO / "book").glob("*.md"))
    assert len(chapters) >= 10  # the book's chapters, not an empty glob
    for path in chapters:
        blocks = [(m.group(1), m.group(2)) for m in BLOCK.finditer(path.read_text())]
        for i, (kind, body) in enumerate(blocks):
            after = blocks[i + 1][1] if i + 1 < len(blocks) else ""
            hidden = ":tags: [remove-input]" in body and "provenance.reproduce" not in body
            if (kind == "{glue:figure}" or hidden) and "provenance.reproduce" not in after:
                missing.append(f"{path.name}: {body.strip().splitlines()[-1][:60]}")
    assert missing == []

"""The student edition: exported from the chapter with otter assign, scored by otter's grader.

One export and one grading pass (three notebooks) are shared by the tests: the reference
solutions, a notebook with a wrong answer, and one whose cells raise. Grading runs each
notebook in a real Jupyter kernel, as a teacher's `wspec assignments grade` does.
"""

from __future__ import annotations

import re
from pathlib import Path

import nbformat
import pytest

from wspec import student
from wspec.book import find_root
from wspec.errors import WspecError

pytest.importorskip("otter", reason="otter-grader is in the `assignments` extra")

ROOT = find_root(Path(__file__).parent)


def _answer(nb: nbformat.NotebookNode, function: str) -> nbformat.NotebookNode:
    """The code cell where the student writes `function` (its `def` line comes first)."""
    cells = [
        c for c in nb.cells if c.cell_type == "code" and c.source.startswith(f"def {function}(")
    ]
    assert len(cells) == 1, function
    return cells[0]


def test_read_exercises_finds_every_checked_exercise() -> None:
    exercises = student.read_exercises(ROOT / student.CHAPTER, ROOT / "book" / "references.bib")
    chapter = (ROOT / student.CHAPTER).read_text()
    assert len(exercises) == len(re.findall(r"^````\{exercise\}", chapter, re.M))
    neff = next(e for e in exercises if e.function == "effective_rank")
    assert neff.checker == "check_effective_rank"
    assert "Roy and Vetterli (2007)" in neff.context and "{cite" not in neff.context
    assert neff.solution.splitlines()[:2] == ["def effective_rank(eigs):", "    # BEGIN SOLUTION"]
    assert "assert" not in neff.solution  # the checker call becomes the otter test


@pytest.fixture(scope="module")
def graded(tmp_path_factory):
    out = tmp_path_factory.mktemp("edition")
    edition = student.export(out / "dist", ROOT)
    solutions = nbformat.read(edition.solutions, as_version=4)
    subs = out / "submissions"
    subs.mkdir()
    nbformat.write(solutions, subs / "reference.ipynb")

    wrong = nbformat.read(edition.solutions, as_version=4)
    # plain rank instead of effective rank: right on rank-one and flat spectra only
    _answer(
        wrong, "effective_rank"
    ).source = "def effective_rank(eigs):\n    return float(np.count_nonzero(eigs))"
    nbformat.write(wrong, subs / "wrong.ipynb")

    raising = nbformat.read(edition.solutions, as_version=4)
    cell = _answer(raising, "gram_eigenvalues")
    cell.source = 'raise RuntimeError("not finished")\n' + cell.source  # cell error: no def
    _answer(
        raising, "participation_ratio"
    ).source = "def participation_ratio(eigs):\n    return 1 / 0"  # raises when called
    nbformat.write(raising, subs / "raising.ipynb")
    scores = student.grade(student.submissions_in([subs]), edition.autograder)
    return edition, scores.set_index("notebook")


@pytest.mark.slow
def test_export_writes_student_edition_without_solutions(graded) -> None:
    edition, _ = graded
    nb = nbformat.read(edition.student, as_version=4)
    code = "\n".join(c.source for c in nb.cells if c.cell_type == "code")
    for function in edition.questions:
        assert f'grader.check("{function}")' in code
        body = _answer(nb, function).source.splitlines()[1:]
        assert [line.strip() for line in body] == ["..."], function  # solution stripped
    assert "SOLUTION" not in code and "np.log(p)" not in code
    readme = (edition.student.parents[1] / "README.md").read_text()
    assert "wspec assignments grade" in readme and "otter run" in readme


@pytest.mark.slow
def test_reference_solutions_score_full_marks(graded) -> None:
    edition, scores = graded
    row = scores.loc["reference.ipynb"]
    assert row["possible"] == len(edition.questions)
    assert row["total"] == row["possible"]
    assert row["failed"] == ""


@pytest.mark.slow
def test_a_wrong_answer_scores_less_and_names_the_failing_case(graded) -> None:
    edition, scores = graded
    row = scores.loc["wrong.ipynb"]
    assert row["effective_rank"] == 0
    assert row["total"] == len(edition.questions) - 1
    assert "[XX] power law λ_i = i^-1.5 (64 modes): expected 10.8175, got 64" in row["failed"]
    assert "[ok] rank one [5, 0, 0, 0]" in row["failed"]


@pytest.mark.slow
def test_a_raising_notebook_loses_only_the_raising_exercises(graded) -> None:
    edition, scores = graded
    row = scores.loc["raising.ipynb"]
    assert row["gram_eigenvalues"] == 0 and row["participation_ratio"] == 0
    assert row["total"] == len(edition.questions) - 2  # the later exercises still scored
    assert "NameError: name 'gram_eigenvalues' is not defined" in row["failed"]
    assert "raised ZeroDivisionError: division by zero" in row["failed"]


def test_export_refuses_a_non_empty_folder(tmp_path) -> None:
    (tmp_path / "old.txt").write_text("x")
    with pytest.raises(WspecError, match="not empty"):
        student.export(tmp_path, ROOT)


def test_grade_needs_notebooks(tmp_path) -> None:
    with pytest.raises(WspecError, match="no .ipynb submissions"):
        student.submissions_in([tmp_path])

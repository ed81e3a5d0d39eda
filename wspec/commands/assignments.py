"""`wspec assignments`: export the student edition (otter-grader) and score submissions."""

from __future__ import annotations

import argparse
from pathlib import Path


def _export(args: argparse.Namespace) -> int:
    from wspec import student
    from wspec.book import find_root

    edition = student.export(Path(args.dir), find_root())
    print(f"student notebook: {edition.student}")
    print(f"solutions:        {edition.solutions}")
    print(f"autograder:       {edition.autograder}")
    print(f"questions:        {', '.join(edition.questions)}")
    print(f"teacher notes:    {edition.student.parents[1] / 'README.md'}")
    return 0


def _grade(args: argparse.Namespace) -> int:
    from wspec import student

    scores = student.grade(student.submissions_in(args.submissions), Path(args.autograder))
    for row in scores.itertuples():
        print(f"{row.notebook}: {row.total:g}/{row.possible:g}")
        if row.failed:
            print("    " + row.failed.replace("\n", "\n    "))
    if args.output:
        scores.to_csv(args.output, index=False)
        print(f"scores written to {args.output}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "assignments",
        help="export the exercises as an otter-grader assignment; score submissions",
        description="The book's exercises for a class: a student notebook without solutions, "
        "the solutions and otter-grader's autograder (export), and scores for a folder of "
        "submitted notebooks without Docker (grade).",
    )
    verbs = parser.add_subparsers(dest="verb", metavar="VERB", required=True)
    e = verbs.add_parser("export", help="write student/, autograder/ and README.md into DIR")
    e.add_argument("dir", help="output folder (new or empty)")
    e.set_defaults(func=_export)
    g = verbs.add_parser("grade", help="score submitted notebooks with otter's local grader")
    g.add_argument("submissions", nargs="+", help="notebooks, or folders of .ipynb files")
    g.add_argument("--autograder", required=True, help="autograder.zip written by export")
    g.add_argument("-o", "--output", help="write the scores as CSV here")
    g.set_defaults(func=_grade)

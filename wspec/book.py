"""Drive the book: run the per-model chapter through papermill, then build HTML and PDF.

Jupyter Book 1 has no parameterised pages, so `book/model_run.md` (a jupytext MyST notebook
with one cell tagged ``parameters``) is executed once per model by papermill into
``book/runs/<slug>.ipynb``; `_config.yml` excludes ``book/runs/*`` from the book's own
execution so those outputs are never re-run with the default parameters. The runs are listed
in ``book/runs/runs.json`` (the manifest the cross-model chapters read with `load_runs`) and
in a generated ``book/runs/index.md`` that `_toc.yml` globs.

Two caches, keyed on what each page's code imports:

* A model run is keyed by ``hash(chapter source + parameters + the wspec modules the
  chapter imports, transitively + pyproject)`` (`chapter_code_hash`); an unchanged re-run
  copies the stored notebook instead of calling papermill.
* The ordinary chapters use myst-nb's ``execute_notebooks: cache`` (jupyter-cache), which keys
  only on code-cell text. `sync_execution_cache` therefore keeps a stamp per chapter — the
  wspec modules it imports (transitively), pyproject.toml and the *contents* of the model
  runs' outputs — and drops that chapter's cached execution when its stamp changes. An edit
  to wspec.stats re-executes the chapters that import it; a prose edit re-executes nothing
  (jupyter-cache sees the same code); a model-run output that changed re-executes every
  chapter that reads runs.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TextIO

import wspec
from wspec.cache import files_digest, import_closure, imported_files
from wspec.errors import WspecError
from wspec.paths import atomic_path, atomic_write_text, cache_dir
from wspec.progress import is_progress_line

CHAPTER = Path("book") / "model_run.md"
RUNS_DIR = Path("book") / "runs"
MANIFEST_NAME = "runs.json"
MANIFEST_SCHEMA = 1
DEFAULT_MODELS: tuple[str, ...] = ("tiny.en", "base")
KERNEL = "python3"
PDF_NAME = "wspec.pdf"
# Environment of every kernel and of the Sphinx builds: no progress bars (their ANSI escapes
# break LaTeX).
BOOK_ENV = {"TQDM_DISABLE": "1"}
_MATHJAX_PARTS = ("tex-mml-chtml.js", "input", "output/chtml", "output/chtml.js", "a11y", "ui")


#: Bootstrap and permutation draws per interval or test, full build and reduced (CI) build.
#: One pair for every chapter, so a number shown on two pages is the same number.
RESAMPLES = {"full": 2000, "reduced": 1000}


def resample_count(reduced: bool) -> int:
    """The book's number of bootstrap/permutation draws (`RESAMPLES`)."""
    return RESAMPLES["reduced" if reduced else "full"]


# --- names and hashes ------------------------------------------------------------------------
def slugify(model: str) -> str:
    """File-safe page name for a model spec: "openai/whisper-large-v3-turbo" -> "openai-whisper-
    large-v3-turbo", "random:tiny" -> "random-tiny", "tiny.en" -> "tiny-en"."""
    slug = re.sub(r"[^a-z0-9]+", "-", model.strip().lower()).strip("-")
    if not slug:
        raise WspecError(f"model spec {model!r} has no letters or digits; pass a real model name.")
    return slug


def find_root(start: str | os.PathLike[str] | None = None) -> Path:
    """The book's root: WSPEC_BOOK_ROOT, else the first folder upward holding _config.yml."""
    if os.environ.get("WSPEC_BOOK_ROOT"):
        return Path(os.environ["WSPEC_BOOK_ROOT"]).resolve()
    here = Path(start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        if (folder / "_config.yml").is_file() and (folder / "_toc.yml").is_file():
            return folder
    package_parent = Path(wspec.__file__).resolve().parents[1]
    if (package_parent / "_config.yml").is_file():
        return package_parent
    raise WspecError(
        f"no book (_config.yml + _toc.yml) at or above {here}; run from the wspec checkout."
    )


def source_hash(root: Path | None = None) -> str:
    """Hash of every wspec source file (path + bytes) and of pyproject.toml: the code
    version a build reports (status page), not a cache key (see `chapter_code_hash`)."""
    package = Path(wspec.__file__).resolve().parent
    h = hashlib.sha256()
    for path in sorted(package.rglob("*.py")):
        h.update(path.relative_to(package).as_posix().encode())
        h.update(path.read_bytes())
    pyproject = (root or package.parent) / "pyproject.toml"
    if pyproject.is_file():
        h.update(pyproject.read_bytes())
    return h.hexdigest()


def run_key(chapter_text: str, parameters: dict, code_hash: str) -> str:
    """Cache key of one papermill run (parameters without `out_dir`, which the key names)."""
    payload = json.dumps(
        {"chapter": chapter_text, "parameters": parameters, "code": code_hash}, sort_keys=True
    )
    return hashlib.sha256(payload.encode()).hexdigest()[:20]


def book_env() -> dict[str, str]:
    """BOOK_ENV plus the hub setting: offline unless the caller's environment says
    HF_HUB_OFFLINE=0, so a machine with hub access can fetch a checkpoint it has not cached
    while the default build never waits on a network it does not have."""
    offline = os.environ.get("HF_HUB_OFFLINE", "1")
    return {**BOOK_ENV, "HF_HUB_OFFLINE": offline, "TRANSFORMERS_OFFLINE": offline}


# --- papermill ---------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class RunResult:
    """One executed parameterised notebook."""

    notebook: Path  # the executed .ipynb (in the run cache)
    out_dir: Path  # where the notebook wrote its outputs
    parameters: dict
    key: str
    cached: bool  # True if papermill was skipped
    seconds: float  # papermill time of the run that produced it


@contextlib.contextmanager
def _environ(extra: dict[str, str]) -> Iterator[None]:
    old = {k: os.environ.get(k) for k in extra}
    os.environ.update(extra)
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def check_parameters_cell(nb) -> None:
    """Exactly one code cell tagged `parameters`, or papermill would inject in the wrong place."""
    tagged = [
        c for c in nb.cells if c.cell_type == "code" and "parameters" in c.metadata.get("tags", [])
    ]
    if len(tagged) != 1:
        raise WspecError(
            f"the chapter needs exactly one code cell tagged 'parameters' (found {len(tagged)}); "
            "tag it with :tags: [parameters] in its {code-cell} header."
        )


def execute_run(
    chapter: Path,
    parameters: dict,
    *,
    cwd: Path,
    code_hash: str,
    cache: Path | None = None,
    timeout: int = 3600,
) -> RunResult:
    """Execute a jupytext chapter with papermill, or reuse the run stored under the same key.

    The notebook is written to ``<cache>/<key>/run.ipynb`` atomically and last, so its
    presence marks a finished run; the chapter receives ``out_dir=<cache>/<key>/out`` and
    must write its outputs there. A failing run leaves nothing that a later run would trust;
    its partial notebook is kept as ``<cache>/<key>/failed.ipynb`` for reading.
    """
    import jupytext
    import papermill

    text = chapter.read_text(encoding="utf-8")
    key = run_key(text, parameters, code_hash)
    folder = (cache or cache_dir("book", "runs")) / key
    notebook, out_dir = folder / "run.ipynb", folder / "out"
    meta_path = folder / "run.json"
    if notebook.is_file() and meta_path.is_file():
        meta = json.loads(meta_path.read_text())
        return RunResult(notebook, out_dir, meta["parameters"], key, True, meta["seconds"])
    nb = jupytext.read(chapter)
    check_parameters_cell(nb)
    if out_dir.exists():
        shutil.rmtree(out_dir)  # leftovers of a failed run must not mix with this one
    out_dir.mkdir(parents=True)
    full = {**parameters, "out_dir": str(out_dir)}
    # papermill saves after every cell; it writes to a temporary .ipynb renamed at the end.
    partial = folder / f".run-{os.getpid()}.ipynb"
    start = time.perf_counter()
    try:
        with _environ(book_env()):
            papermill.execute_notebook(
                nb,
                str(partial),
                parameters=full,
                kernel_name=KERNEL,
                language="python",
                cwd=str(cwd),
                progress_bar=False,
                execution_timeout=timeout,
                stderr_file=_ProgressRelay(sys.stderr),
            )
    except papermill.PapermillExecutionError as err:
        failed = folder / "failed.ipynb"
        if partial.exists():
            os.replace(partial, failed)
        raise WspecError(
            f"{chapter} failed for parameters {parameters}: {err.ename}: {err.evalue} "
            f"(executed notebook with the traceback: {failed})"
        ) from err
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    seconds = time.perf_counter() - start
    atomic_write_text(meta_path, json.dumps({"parameters": full, "seconds": seconds}))
    os.replace(partial, notebook)  # last: its presence marks a finished run
    return RunResult(notebook, out_dir, full, key, False, seconds)


class _ProgressRelay:
    """A stream for papermill's `stderr_file`: passes on the kernel's progress lines
    (`wspec.progress`) and drops the rest, which stays in the notebook for reading."""

    def __init__(self, target: TextIO) -> None:
        self.target = target

    def write(self, text: str) -> None:
        for line in text.splitlines():
            if is_progress_line(line):
                print(f"  {line}", file=self.target, flush=True)

    def flush(self) -> None:
        self.target.flush()


def _without_progress(cell) -> None:
    """Remove `wspec.progress` lines from a code cell's stderr outputs (and emptied outputs)."""
    kept = []
    for output in cell.get("outputs", []):
        if output.get("output_type") == "stream" and output.get("name") == "stderr":
            text = "".join(output.get("text", ""))
            lines = [ln for ln in text.splitlines(keepends=True) if not is_progress_line(ln)]
            if not "".join(lines).strip():
                continue
            output["text"] = "".join(lines)
        kept.append(output)
    cell["outputs"] = kept


# --- the per-model runs ----------------------------------------------------------------------
def run_parameters(model: str, reduced: bool) -> dict:
    """Parameters of `book/model_run.md` for one model (out_dir is added per run)."""
    return {"model": model, "stimulus_set": "ci" if reduced else "default", "reduced": reduced}


def _titled(notebook: Path, target: Path, model: str) -> None:
    """Copy the executed notebook to the book, naming the model in its first heading and
    without the progress lines its run printed.

    All runs come from one chapter, so without this every page would be titled alike in the
    table of contents.
    """
    import nbformat

    nb = nbformat.read(notebook, as_version=4)
    for cell in nb.cells:
        if cell.cell_type == "code":
            _without_progress(cell)
    for cell in nb.cells:
        if cell.cell_type == "markdown" and cell.source.lstrip().startswith("# "):
            first, _, rest = cell.source.lstrip().partition("\n")
            cell.source = f"{first}: `{model}`\n{rest}"
            break
    with atomic_path(target) as tmp:
        nbformat.write(nb, tmp)


def _outputs(out_dir: Path) -> dict:
    """What the chapter says it wrote (out_dir/outputs.json), paths made absolute."""
    path = out_dir / "outputs.json"
    if not path.is_file():
        return {}
    listed = json.loads(path.read_text())
    return {k: str((out_dir / v).resolve()) if isinstance(v, str) else v for k, v in listed.items()}


def _stimulus_hash(set_name: str) -> str | None:
    """`manifest_hash` of the set a run measured; None for a chapter that built no set (the
    book's chapter always builds or reads one, a test chapter may not)."""
    from wspec.stimuli import load_manifest, manifest_hash

    try:
        return manifest_hash(load_manifest(set_name))
    except WspecError:
        return None


def _run_one(
    model: str, slug: str, reduced: bool, chapter: Path, code: str, root: Path, cache: Path | None
) -> dict:
    """Execute (or reuse) one model's run and place its page in book/runs/; its manifest entry."""
    print(f"[wspec book] model run {model} ...", flush=True)
    result = execute_run(
        chapter, run_parameters(model, reduced), cwd=chapter.parent, code_hash=code, cache=cache
    )
    page = root / RUNS_DIR / f"{slug}.ipynb"
    _titled(result.notebook, page, model)
    state = "cached" if result.cached else f"executed in {result.seconds:.0f} s"
    print(f"[wspec book]   {model}: {state} -> {page.relative_to(root)}", flush=True)
    return {
        "model": model,
        "slug": slug,
        "page": page.relative_to(root).as_posix(),
        "parameters": result.parameters,
        "cache_key": result.key,
        "stimulus_hash": _stimulus_hash(result.parameters["stimulus_set"]),
        "seconds": round(result.seconds, 1),
        "outputs": _outputs(result.out_dir),
    }


def run_models(
    models: Sequence[str], *, reduced: bool, root: Path, cache: Path | None = None
) -> dict:
    """Run the chapter for each model, write book/runs/ (pages, index, runs.json); return it."""
    if not models:
        raise WspecError("no models given; pass e.g. --models tiny.en base")
    slugs = [slugify(m) for m in models]
    clashes = {s for s in slugs if slugs.count(s) > 1}
    if clashes:
        raise WspecError(
            f"models {list(models)} map to the same page name(s) {sorted(clashes)}; "
            "pass each model once."
        )
    chapter = root / CHAPTER
    if not chapter.is_file():
        raise WspecError(f"{chapter} is missing; restore it from git.")
    code = chapter_code_hash(chapter, root)
    runs_dir = root / RUNS_DIR
    runs_dir.mkdir(parents=True, exist_ok=True)
    with _environ({"WSPEC_BOOK_ROOT": str(root)}):
        records = [
            _run_one(model, slug, reduced, chapter, code, root, cache)
            for model, slug in zip(models, slugs, strict=True)
        ]
    keep = {f"{s}.ipynb" for s in slugs}
    for stale in runs_dir.glob("*.ipynb"):
        if stale.name not in keep:
            stale.unlink()  # a run of an earlier invocation; its cache entry stays
    manifest = {
        "schema_version": MANIFEST_SCHEMA,
        "reduced": reduced,
        "stimulus_set": run_parameters("", reduced)["stimulus_set"],
        "source_hash": source_hash(root),
        "runs": records,
    }
    atomic_write_text(runs_dir / MANIFEST_NAME, json.dumps(manifest, indent=2) + "\n")
    atomic_write_text(runs_dir / "index.md", runs_index(manifest))
    return manifest


def runs_index(manifest: dict) -> str:
    """The generated landing page of the Model runs part."""
    mode = "reduced (CI) mode" if manifest["reduced"] else "full mode"
    lines = [
        "# Model runs",
        "",
        "One page per model: `book/model_run.md` executed by papermill with the parameters "
        f"below ({mode}, stimulus set `{manifest['stimulus_set']}`). "
        "This page is generated by `wspec book`; edit the chapter, not the pages.",
        "",
        "| model | page | parameters |",
        "| --- | --- | --- |",
    ]
    for run in manifest["runs"]:
        params = ", ".join(f"{k}={v!r}" for k, v in run["parameters"].items() if k != "out_dir")
        lines.append(f"| `{run['model']}` | {{doc}}`{run['slug']}` | `{params}` |")
    return "\n".join(lines) + "\n"


def load_runs(root: Path | None = None) -> dict:
    """The runs manifest (book/runs/runs.json) for the cross-model chapters.

    Keys: schema_version, reduced, stimulus_set, source_hash, runs (list of dicts with model,
    slug, page, parameters, cache_key, stimulus_hash, seconds, outputs = {name: absolute
    path}).
    """
    path = (root or find_root()) / RUNS_DIR / MANIFEST_NAME
    if not path.is_file():
        raise WspecError(f"{path} not found; run `wspec book` first (it runs every model).")
    manifest = json.loads(path.read_text())
    if manifest.get("schema_version") != MANIFEST_SCHEMA:
        raise WspecError(f"{path} has an old schema; re-run `wspec book`.")
    return manifest


# --- the Sphinx builds -----------------------------------------------------------------------
def toc_files(root: Path) -> list[str]:
    """Every `file:` entry of _toc.yml (root included), without suffix."""
    import yaml

    toc = yaml.safe_load((root / "_toc.yml").read_text())
    found: list[str] = [toc["root"]]

    def walk(node) -> None:
        if isinstance(node, dict):
            if "file" in node:
                found.append(str(node["file"]))
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for item in node:
                walk(item)

    walk({k: v for k, v in toc.items() if k != "root"})
    return found


def missing_chapters(root: Path) -> list[str]:
    """TOC entries with neither a .md nor an .ipynb source."""
    return [
        f
        for f in toc_files(root)
        if not any((root / f"{f}{ext}").is_file() for ext in (".md", ".ipynb"))
    ]


def prepare_mathjax(root: Path) -> Path:
    """Copy MathJax 3 (from the django-static-mathjax wheel) to where _config.yml expects it.

    The HTML then renders math offline; the CDN default would leave raw TeX without internet.
    """
    try:
        import mathjax
    except ImportError as err:
        raise WspecError(
            "MathJax is not installed; run `pip install -e .[book]` (django-static-mathjax)."
        ) from err
    src = Path(mathjax.__file__).parent / "static" / "mathjax" / "es5"
    dest = root / "_build" / "_mathjax_static" / "mathjax"
    for part in _MATHJAX_PARTS:
        source, target = src / part, dest / part
        if source.is_dir():
            shutil.copytree(source, target, dirs_exist_ok=True)
        elif not target.is_file() or target.stat().st_size != source.stat().st_size:
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source, target)
    return dest


def chapter_code(chapter: Path) -> str:
    """The Python code of a jupytext chapter (its code cells; IPython magics dropped)."""
    import jupytext

    cells = jupytext.read(chapter).cells
    code = "\n".join(c.source for c in cells if c.cell_type == "code")
    return "\n".join(line for line in code.splitlines() if line.lstrip()[:1] not in ("%", "!"))


def chapter_code_hash(chapter: Path, root: Path) -> str:
    """Hash of the wspec modules a chapter imports, transitively, and of pyproject.toml: the
    code its results depend on besides its own cells."""
    package = Path(wspec.__file__).resolve().parent
    files = import_closure(imported_files(chapter_code(chapter)))
    h = hashlib.sha256(files_digest(files, package.parent).encode())
    pyproject = root / "pyproject.toml"
    if pyproject.is_file():
        h.update(pyproject.read_bytes())
    return h.hexdigest()


def _runs_digest(root: Path, provenance: bool) -> str:
    """What a chapter reads of the model runs: each run's parameters and the bytes of its
    output files; the whole manifest (wall times, hashes) for a page that reports them."""
    path = root / RUNS_DIR / MANIFEST_NAME
    if not path.is_file():
        return ""
    manifest = json.loads(path.read_text())
    h = hashlib.sha256(path.read_bytes() if provenance else b"")
    for run in manifest["runs"]:
        h.update(json.dumps([run["model"], run["parameters"]], sort_keys=True).encode())
        for name, value in sorted(run["outputs"].items()):
            h.update(name.encode())
            file = Path(str(value))
            h.update(file.read_bytes() if file.is_file() else json.dumps(value).encode())
    return h.hexdigest()


def chapter_stamps(root: Path) -> dict[str, str]:
    """Per chapter of _toc.yml that has code: the stamp whose change must re-execute it."""
    stamps = {}
    for name in toc_files(root):
        chapter = root / f"{name}.md"
        code = chapter_code(chapter) if chapter.is_file() else ""
        if not code.strip():
            continue  # nothing to execute
        code_hash = chapter_code_hash(chapter, root)
        provenance = "provenance" in code
        stamps[name] = hashlib.sha256(
            (code_hash + _runs_digest(root, provenance)).encode()
        ).hexdigest()
    return stamps


def sync_execution_cache(root: Path) -> list[str]:
    """Drop myst-nb's cached execution of each chapter whose stamp changed; their names."""
    from jupyter_cache import get_cache

    stamps = chapter_stamps(root)
    stamp_file = root / "_build" / ".wspec-exec-stamps.json"
    old = json.loads(stamp_file.read_text()) if stamp_file.is_file() else {}
    changed = sorted(name for name, stamp in stamps.items() if old.get(name) != stamp)
    folder = root / "_build" / ".jupyter_cache"
    if changed and folder.exists():
        cache = get_cache(folder)
        paths = {(root / f"{name}.md").resolve() for name in changed}
        for record in cache.list_cache_records():
            if Path(record.uri).resolve() in paths:
                cache.remove_cache(record.pk)
    atomic_write_text(stamp_file, json.dumps(stamps, indent=1, sort_keys=True))
    return changed


def jupyter_book_command(root: Path, builder: str) -> list[str]:
    """`jupyter-book build` with the strict flags: any warning (failing cell, broken
    reference, missing figure) fails the build; --keep-going reports all of them first."""
    exe = Path(sys.executable).with_name("jupyter-book")
    return [
        str(exe) if exe.is_file() else "jupyter-book",
        "build",
        str(root),
        "--builder",
        builder,
        "--warningiserror",
        "--nitpick",
        "--keep-going",
    ]


def run_build(root: Path, builder: str) -> float:
    """One strict Sphinx build (fresh doctrees: HTML and LaTeX must not share them)."""
    shutil.rmtree(root / "_build" / ".doctrees", ignore_errors=True)
    env = {**os.environ, **book_env(), "WSPEC_BOOK_ROOT": str(root)}
    start = time.perf_counter()
    done = subprocess.run(jupyter_book_command(root, builder), cwd=root, env=env)
    if done.returncode != 0:
        raise WspecError(
            f"the {builder} build failed (exit {done.returncode}); the first warning or "
            "error above says which chapter and line."
        )
    return time.perf_counter() - start


def build(
    models: Sequence[str] = DEFAULT_MODELS,
    *,
    reduced: bool = False,
    html: bool = True,
    pdf: bool = True,
    root: Path | None = None,
) -> dict[str, float]:
    """The whole book: model runs, then strict HTML and PDF builds. Returns seconds per stage."""
    root = (root or find_root()).resolve()
    times: dict[str, float] = {}
    start = time.perf_counter()
    stages = ["model runs"] + ["HTML"] * html + ["PDF"] * pdf

    def stage(name: str) -> None:
        n = stages.index(name) + 1
        print(f"[wspec book] stage {n}/{len(stages)}: {name}", flush=True)

    stage("model runs")
    run_models(models, reduced=reduced, root=root)
    times["model_runs"] = time.perf_counter() - start
    missing = missing_chapters(root)
    if missing:
        raise WspecError(
            f"_toc.yml lists chapters with no source file: {', '.join(missing)}; "
            "add them (book/<name>.md) or remove them from _toc.yml."
        )
    prepare_mathjax(root)
    changed = sync_execution_cache(root)
    if changed:
        print(f"[wspec book] code or runs changed for: {', '.join(changed)} (re-executed)")
    if html:
        stage("HTML")  # Sphinx names each chapter as it executes it ("reading sources")
        times["html"] = run_build(root, "html")
    if pdf:
        stage("PDF")
        times["pdf"] = run_build(root, "pdflatex")
        pdf_path = root / "_build" / "latex" / PDF_NAME
        if not pdf_path.is_file():
            raise WspecError(f"the LaTeX build produced no _build/latex/{PDF_NAME}.")
        if html:  # the landing page links it (book/intro.md)
            shutil.copy2(pdf_path, root / "_build" / "html" / PDF_NAME)
    times["total"] = time.perf_counter() - start
    return times

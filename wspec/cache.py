"""Every cached result goes through here: its key is derived from what it declares it uses.

A cached number is only as good as its key. Each kind of result (`Kind`) names the code it
depends on — whole modules (``"wspec.labels"``), packages (``"wspec.models"``) or single
functions (``"wspec.seqlen:_gaussian_null"``) — and callers add the data it depends on
(model identity, audio hash, settings). The key hashes the *source* of the declared code
together with that data, so

- editing a declared dependency recomputes exactly the results that declare it,
- an edit anywhere else recomputes nothing, and
- nobody has to remember to bump a version number.

Entries are written through `wspec.paths.atomic_path` (a temporary file renamed on
success), so a crash mid-write leaves no entry that a later run would read.
"""

from __future__ import annotations

import ast
import functools
import hashlib
import importlib
import importlib.util
import inspect
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import pandas as pd

from wspec.paths import atomic_path, cache_dir

T = TypeVar("T")


@functools.cache
def _source_of(dependency: str) -> bytes:
    """Source bytes of a dotted dependency: ``pkg.mod`` (a module, or every module of a
    package) or ``pkg.mod:function`` (one function or class)."""
    module_name, _, attr = dependency.partition(":")
    module = importlib.import_module(module_name)
    if attr:
        return inspect.getsource(getattr(module, attr)).encode()
    path = Path(inspect.getfile(module))
    if path.name != "__init__.py":
        return path.read_bytes()
    files = sorted(path.parent.rglob("*.py"))
    return b"".join(f.relative_to(path.parent).as_posix().encode() + f.read_bytes() for f in files)


def code_digest(depends: tuple[str, ...]) -> str:
    """SHA-256 over the declared dependencies' names and sources (in a fixed order)."""
    h = hashlib.sha256()
    for dependency in sorted(set(depends)):
        h.update(dependency.encode() + b"\0" + _source_of(dependency) + b"\0")
    return h.hexdigest()


def _module_file(name: str) -> Path | None:
    """File of module `name`, or of its parent when `name` is an attribute (``from wspec
    import __version__``); None outside an importable module."""
    while name:
        try:
            spec = importlib.util.find_spec(name)
        except (ImportError, ValueError):
            spec = None
        if spec is not None and spec.origin and spec.origin.endswith(".py"):
            return Path(spec.origin)
        name = name.rpartition(".")[0]
    return None


def imported_files(code: str, package: str = "wspec") -> set[Path]:
    """Source files of `package` that Python `code` imports (at any depth of the code, so
    imports inside functions count too)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(code)):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names |= {f"{node.module}.{alias.name}" for alias in node.names}
    ours = {n for n in names if n == package or n.startswith(package + ".")}
    return {f for f in map(_module_file, ours) if f is not None}


def import_closure(files: set[Path], package: str = "wspec") -> list[Path]:
    """`files` and every `package` file they import, transitively, sorted: the code a
    chapter's results can depend on."""
    seen: set[Path] = set()
    todo = list(files)
    while todo:
        path = todo.pop()
        if path in seen:
            continue
        seen.add(path)
        todo += imported_files(path.read_text(encoding="utf-8"), package) - seen
    return sorted(seen)


def files_digest(files: list[Path], root: Path) -> str:
    """SHA-256 over files' paths (relative to `root`) and bytes."""
    h = hashlib.sha256()
    for path in sorted(files):
        h.update(path.relative_to(root).as_posix().encode() + b"\0" + path.read_bytes() + b"\0")
    return h.hexdigest()


def forget_sources() -> None:
    """Drop the memo of source texts (after editing code in a running process, as tests do)."""
    _source_of.cache_clear()


@dataclass(frozen=True)
class Kind:
    """One kind of cached result: where it lives and which code it depends on."""

    folder: tuple[str, ...]
    depends: tuple[str, ...]

    def key(self, **data: object) -> str:
        """Content address of one entry: the declared code plus the caller's data (which
        must name the model identity where a model made the result)."""
        payload = json.dumps(
            {"code": code_digest(self.depends), "data": data}, sort_keys=True, default=str
        )
        return hashlib.sha256(payload.encode()).hexdigest()[:24]

    def dir(self, *subfolders: str) -> Path:
        """This kind's folder (or a subfolder of it) in the cache, created on demand."""
        return cache_dir(*self.folder, *subfolders)


def fetch(
    path: Path,
    compute: Callable[[], T],
    save: Callable[[T, Path], None],
    load: Callable[[Path], T],
) -> T:
    """The entry at `path` if it is complete, else `compute()` stored atomically there."""
    if path.is_file():
        return load(path)
    value = compute()
    with atomic_path(path) as tmp:
        save(value, tmp)
    return value


def fetch_frame(path: Path, compute: Callable[[], pd.DataFrame]) -> pd.DataFrame:
    """`fetch` for a table stored as parquet."""
    return fetch(path, compute, lambda df, p: df.to_parquet(p, index=False), pd.read_parquet)


# --- the kinds of cached result --------------------------------------------------------
#: Per-stimulus spectra, decodes and eigen-spectra of one model (wspec.pipeline).
RUNS = Kind(
    ("runs",),
    (
        "wspec.capture",
        "wspec.interventions",
        "wspec.spectra",
        "wspec.seqlen",
        "wspec.pipeline",
        "wspec.decoding",
        "wspec.audio",
        "wspec.models",
    ),
)
#: Greedy-decode labels of a manifest (wspec.labels).
LABELS = Kind(("labels",), ("wspec.labels", "wspec.decoding"))
#: Adversarially attacked clips (wspec.attacks).
ATTACKS = Kind(
    ("stimuli", "attacks"),
    (
        "wspec.attacks",
        "wspec.melspec",
        "wspec.decoding",
        "wspec.labels:normalize",
        "wspec.labels:error_rates",
    ),
)
#: Expected metrics of Gaussian matrices of a shape (wspec.seqlen).
NULLS = Kind(("nulls",), ("wspec.spectra", "wspec.seqlen:_gaussian_null"))
#: Jacobian gain and alignment of decoded clips (wspec.jacobian).
JACOBIANS = Kind(("jacobian", "clips"), ("wspec.jacobian",))
#: Persistence of the top singular direction of the decoder stack over steps (wspec.attractor).
ATTRACTORS = Kind(("jacobian", "attractor"), ("wspec.attractor", "wspec.jacobian"))
#: Transcript changes under head ablations (wspec.causal).
ABLATIONS = Kind(("causal",), ("wspec.causal", "wspec.interventions", "wspec.decoding"))
#: Table 1's delta table of one build (wspec.context), keyed on its runs.json.
DELTAS = Kind(("book", "deltas"), ("wspec.stats", "wspec.context"))
#: CTranslate2 weights converted to a transformers checkpoint (wspec.models).
CONVERSIONS = Kind(
    ("models",), ("wspec.models.convert", "wspec.models.ct2_to_hf", "wspec.models.ct2_format")
)

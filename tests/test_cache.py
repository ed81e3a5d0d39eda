"""wspec.cache: keys follow the declared code, and half-written entries are never read."""

from __future__ import annotations

import importlib
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pandas as pd
import pytest

from wspec import cache

MODULE_A = """
def rule(x):
    return x + 1


def helper(x):
    return x * 2
"""
MODULE_B = """
def other(x):
    return x - 1
"""


@pytest.fixture()
def package(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A throw-away package `cachefix` with modules a and b, importable for this test."""
    root = tmp_path / "src" / "cachefix"
    root.mkdir(parents=True)
    (root / "__init__.py").write_text("")
    (root / "a.py").write_text(textwrap.dedent(MODULE_A))
    (root / "b.py").write_text(textwrap.dedent(MODULE_B))
    monkeypatch.syspath_prepend(str(tmp_path / "src"))
    yield root
    for name in [m for m in sys.modules if m.startswith("cachefix")]:
        del sys.modules[name]
    cache.forget_sources()


def _edit(path: Path, old: str, new: str) -> None:
    """Edit a module's source as a person would, and let the next key see it."""
    path.write_text(path.read_text().replace(old, new))
    importlib.invalidate_caches()
    for name in [m for m in sys.modules if m.startswith("cachefix")]:
        del sys.modules[name]
    cache.forget_sources()


def _keys(kinds: dict[str, cache.Kind]) -> dict[str, str]:
    return {name: kind.key(model="m") for name, kind in kinds.items()}


def test_editing_a_dependency_invalidates_exactly_its_dependents(package: Path) -> None:
    kinds = {
        "on_a": cache.Kind(("t", "a"), ("cachefix.a",)),
        "on_rule": cache.Kind(("t", "r"), ("cachefix.a:rule",)),
        "on_b": cache.Kind(("t", "b"), ("cachefix.b",)),
        "on_package": cache.Kind(("t", "p"), ("cachefix",)),
    }
    before = _keys(kinds)
    _edit(package / "a.py", "x * 2", "x * 3")  # helper changes; rule does not
    after = _keys(kinds)
    changed = {name for name in kinds if before[name] != after[name]}
    assert changed == {"on_a", "on_package"}

    _edit(package / "a.py", "x + 1", "x + 2")  # now the rule itself changes
    again = _keys(kinds)
    assert {name for name in kinds if after[name] != again[name]} == {
        "on_a",
        "on_rule",
        "on_package",
    }


def test_an_unrelated_edit_invalidates_nothing(package: Path) -> None:
    kinds = {"on_a": cache.Kind(("t", "a"), ("cachefix.a",))}
    before = _keys(kinds)
    _edit(package / "b.py", "x - 1", "x - 5")
    (package / "c.py").write_text("VALUE = 1\n")  # a new, undeclared module
    assert _keys(kinds) == before


def test_data_is_part_of_the_key(package: Path) -> None:
    kind = cache.Kind(("t", "a"), ("cachefix.a",))
    assert kind.key(model="tiny.en") != kind.key(model="base")
    assert kind.key(model="tiny.en", settings={"k": 1}) != kind.key(
        model="tiny.en", settings={"k": 2}
    )
    assert kind.key(model="tiny.en", settings={"k": 1}) == kind.key(
        settings={"k": 1}, model="tiny.en"
    )


def test_the_kinds_name_real_code() -> None:
    """Every declared dependency of the package's own kinds resolves to source."""
    kinds = [v for v in vars(cache).values() if isinstance(v, cache.Kind)]
    assert len(kinds) >= 6
    for kind in kinds:
        assert len(cache.code_digest(kind.depends)) == 64


def test_a_half_written_entry_is_never_read(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("WSPEC_CACHE", str(tmp_path))
    kind = cache.Kind(("t",), ("wspec.cache",))
    path = kind.dir() / f"{kind.key(model='m')}.parquet"
    frame = pd.DataFrame({"x": [1.0, 2.0]})

    def crash(df: pd.DataFrame, target: Path) -> None:
        target.write_bytes(df.to_parquet()[:10])  # a truncated file, then the crash
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        cache.fetch(path, lambda: frame, crash, pd.read_parquet)
    assert not path.exists()
    assert list(kind.dir().iterdir()) == []  # no partial file left beside it either

    calls = []

    def compute() -> pd.DataFrame:
        calls.append(1)
        return frame

    pd.testing.assert_frame_equal(cache.fetch_frame(path, compute), frame)
    pd.testing.assert_frame_equal(cache.fetch_frame(path, compute), frame)
    assert calls == [1]  # computed once, then read


def test_an_entry_killed_mid_write_is_recomputed(tmp_path: Path) -> None:
    """SIGKILL leaves no chance to clean up: the partial bytes stay on disk as a `.part`
    file, and the next fetch must still compute instead of reading them."""
    script = textwrap.dedent(
        """
        import os, signal, sys
        import pandas as pd
        from wspec import cache
        kind = cache.Kind(("t",), ("wspec.cache",))
        def save(df, target):
            target.write_bytes(df.to_parquet()[:20])
            os.kill(os.getpid(), signal.SIGKILL)
        cache.fetch(kind.dir() / "entry.parquet", lambda: pd.DataFrame({"x": [1]}), save,
                    pd.read_parquet)
        """
    )
    env = {**os.environ, "WSPEC_CACHE": str(tmp_path)}
    proc = subprocess.run([sys.executable, "-c", script], env=env, timeout=120)
    assert proc.returncode == -signal.SIGKILL
    folder = tmp_path / "t"
    assert [p.suffix for p in folder.iterdir()] == [".part"]  # the debris is there
    path = folder / "entry.parquet"
    assert not path.exists()
    fresh = pd.DataFrame({"y": [3]})
    pd.testing.assert_frame_equal(cache.fetch_frame(path, lambda: fresh), fresh)


def test_a_chapter_depends_on_what_it_imports_transitively(package: Path) -> None:
    (package / "c.py").write_text("from cachefix import b\n\ndef f():\n    return b.other(1)\n")
    chapter = "import numpy\nfrom cachefix.c import f\n"
    closure = cache.import_closure(cache.imported_files(chapter, "cachefix"), "cachefix")
    assert {p.name for p in closure} == {"c.py", "b.py"}
    before = cache.files_digest(closure, package.parent)
    _edit(package / "a.py", "x + 1", "x + 9")  # not imported: nothing changes
    assert cache.files_digest(closure, package.parent) == before
    _edit(package / "b.py", "x - 1", "x - 2")  # imported through c: the chapter changes
    assert cache.files_digest(closure, package.parent) != before
    lazy = "def g():\n    from cachefix import a\n    return a.rule(1)\n"
    assert {p.name for p in cache.imported_files(lazy, "cachefix")} == {"a.py"}

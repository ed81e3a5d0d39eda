"""wspec.context: one context per build, the same delta table on every page, cached on disk."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from wspec import cache as wcache
from wspec import context as ctx_module
from wspec import stats
from wspec.book import MANIFEST_NAME, MANIFEST_SCHEMA, RUNS_DIR, resample_count
from wspec.errors import WspecError


def _spectra(model: str) -> pd.DataFrame:
    """4 clean and 4 non-speech stimuli, each its own cluster, null-normalised rows."""
    rng = np.random.default_rng(0)
    rows = []
    for i in range(8):
        family = "clean" if i < 4 else "nonspeech"
        for component in stats.TABLE1_COMPONENTS:
            for metric in stats.TABLE1_METRICS:
                control = "null_ratio" if metric == "n_eff" else "null_diff"
                rows.append(
                    {
                        "model": model,
                        "stimulus_id": f"s{i}",
                        "family": family,
                        "source_id": "",
                        "layer": 0,
                        "component": component,
                        "control": control,
                        "metric": metric,
                        "K": 10,
                        "value": (1.0 if family == "clean" else 0.8) + 0.05 * rng.standard_normal(),
                    }
                )
    return pd.DataFrame(rows)


def _root(tmp_path: Path, models: list[str]) -> Path:
    runs = []
    for model in models:
        path = tmp_path / f"{model.replace(':', '_')}.parquet"
        _spectra(model).to_parquet(path)
        runs.append({"model": model, "outputs": {"spectra": str(path)}})
    manifest = {"schema_version": MANIFEST_SCHEMA, "reduced": True, "stimulus_set": "ci"}
    folder = tmp_path / RUNS_DIR
    folder.mkdir(parents=True)
    (folder / MANIFEST_NAME).write_text(json.dumps(manifest | {"runs": runs}))
    return tmp_path


def test_context_holds_the_builds_choices_once(tmp_path: Path) -> None:
    root = _root(tmp_path, ["tiny.en", "random:tiny.en"])
    ctx = ctx_module.context(root)
    assert ctx is ctx_module.context(root)  # one object per build and kernel
    assert sorted(ctx.models) == ["random:tiny.en", "tiny.en"]
    assert ctx.trained == ["tiny.en"]
    assert ctx.n_resamples == resample_count(True)
    assert set(ctx.results["model"]) == {"tiny.en", "random:tiny.en"}


def test_deltas_are_the_trained_table_and_read_back_from_disk(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("WSPEC_CACHE", str(tmp_path / "cache"))
    root = _root(tmp_path, ["tiny.en", "random:tiny.en"])
    first = ctx_module.context(root).deltas
    assert set(first["model"]) == {"tiny.en"}  # untrained runs are controls, not Table 1
    assert (first["estimate"] < 0).all()  # stressed values sit 20 % below clean ones
    cached = list(wcache.DELTAS.dir().glob("*.parquet"))
    assert len(cached) == 1
    # A new kernel (fresh context) reads the file instead of bootstrapping again.
    ctx_module._context.cache_clear()
    monkeypatch.setattr(stats, "delta_table", lambda *a, **k: pytest.fail("recomputed"))
    pd.testing.assert_frame_equal(ctx_module.context(root).deltas, first)


def test_context_without_runs_says_what_to_do(tmp_path: Path) -> None:
    with pytest.raises(WspecError, match="wspec book"):
        ctx_module.context(tmp_path)

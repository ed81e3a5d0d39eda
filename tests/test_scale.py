"""wspec.scale: clips analysed on a Dask cluster give the very numbers of a serial run."""

from __future__ import annotations

import pandas as pd
import pytest

from wspec import pipeline, scale
from wspec.errors import WspecError


def test_scheduler_choice(monkeypatch) -> None:
    monkeypatch.delenv(scale.SCHEDULER_ENV, raising=False)
    assert scale.scheduler_choice() == scale.LOCAL
    monkeypatch.setenv(scale.SCHEDULER_ENV, "tcp://10.0.0.1:8786")
    assert scale.scheduler_choice() == "tcp://10.0.0.1:8786"
    assert scale.scheduler_choice("serial") == scale.SERIAL
    with pytest.raises(WspecError, match="tcp://host:8786"):
        scale.scheduler_choice("fast")


def _outputs(out) -> tuple[pd.DataFrame, ...]:
    return tuple(
        pd.read_parquet(out.with_name(out.stem + suffix))
        for suffix in (".parquet", ".decodes.parquet", ".eigen.parquet")
    )


@pytest.mark.slow
def test_two_worker_cluster_matches_a_serial_run_bit_for_bit(tmp_path, tiny_en) -> None:
    """Same ci clips, separate result caches: the cluster's tables equal the serial ones
    exactly (no tolerance: each clip runs on one torch thread wherever it runs)."""
    from distributed import LocalCluster

    from wspec.stimuli import build_stimuli

    manifest = build_stimuli("ci", progress=False)

    def run(name: str, scheduler: str):
        out = tmp_path / name / "t.parquet"
        pipeline.run_model(
            "tiny.en",
            "ci",
            out=out,
            manifest=manifest,
            loaded=tiny_en,
            progress=False,
            cache=tmp_path / f"{name}-cache",
            scheduler=scheduler,
        )
        return _outputs(out)

    serial = run("serial", "serial")
    with LocalCluster(n_workers=2, threads_per_worker=1, dashboard_address=None) as cluster:
        spread = run("dask", cluster.scheduler_address)
    assert len(list((tmp_path / "dask-cache").rglob("*.parquet"))) == len(manifest)
    for a, b in zip(serial, spread, strict=True):
        pd.testing.assert_frame_equal(a, b, check_exact=True)

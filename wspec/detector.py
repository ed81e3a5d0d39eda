"""The hallucination probe as a tool: train it on a model's run, store it, apply it to new audio.

The stored probe is detector (e) of `wspec.probe` (Whisper's signals + per-layer spectral
features + LapEigvals of the per-head cross-attention maps) fitted on every case of one
model's run, saved with joblib beside that run's table in the wspec cache (`probe_path`),
together with what a user needs to trust it: the model identity (name and weights), the
training set, its cross-validated AUROC per evaluation set, the library versions and the
feature columns it reads (``columns``). Applying it to a file runs the same single decode as
the pipeline (`pipeline.run_model` on a one-row manifest), so the features are computed
exactly as in training; a probe of other weights, or none, is an error that says how to
train one.
"""

from __future__ import annotations

import datetime
import hashlib
import platform
import tempfile
from pathlib import Path

import joblib
import numpy as np
import pandas as pd
import sklearn

import wspec
from wspec import probe
from wspec.errors import WspecError
from wspec.paths import atomic_path

PROBE_SCHEMA = 1


def probe_path(model_name: str, set_name: str) -> Path:
    """Where the probe of `model_name` trained on `set_name` lives: beside the run's table."""
    from wspec.pipeline import default_output

    table = default_output(model_name, set_name)
    return table.with_name(table.stem + ".probe.joblib")


def train_command(model: str, set_name: str) -> str:
    return f"wspec detect --train --model {model} --set {set_name}"


def train(
    results: pd.DataFrame,
    labels: pd.DataFrame,
    durations: pd.Series,
    *,
    identity: str,
    model: str,
    training_set: str,
    features: pd.DataFrame | None = None,
    n_boot: int = 500,
) -> dict:
    """Cross-validate and fit detector (e) on one model's run; the bundle `save` stores.

    `features` is the run's probe-feature table (`pipeline.features_path`)."""
    cases = probe.case_table(results, labels, durations, model=model, features=features)
    scores, _ = probe.all_scores(cases)
    cv = probe.evaluate(cases, scores[[probe.COMBINED, probe.WHISPER_ALL]], n_boot=n_boot)
    pipe, columns = probe.fit(cases, probe.COMBINED)
    return {
        "schema": PROBE_SCHEMA,
        "pipeline": pipe,
        "columns": columns,
        "control": probe.PROBE_CONTROL,
        "K": probe.PROBE_K,
        "model": model,
        "model_identity": identity,
        "training_set": training_set,
        "n_cases": len(cases),
        "n_hallucinated": int(cases["label"].sum()),
        "cv": cv.to_dict("records"),
        "versions": {
            "wspec": wspec.__version__,
            "scikit-learn": sklearn.__version__,
            "numpy": np.__version__,
            "python": platform.python_version(),
        },
        "trained_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }


def save(bundle: dict, path: Path) -> Path:
    with atomic_path(path) as tmp:
        joblib.dump(bundle, tmp)
    return path


def load_probe(identity: str, model_name: str, set_name: str) -> dict:
    """The stored probe for these weights; a clear error if it is missing or of other weights."""
    path = probe_path(model_name, set_name)
    how = f"train one with `{train_command(model_name, set_name)}`"
    if not path.is_file():
        raise WspecError(f"no hallucination probe for {model_name} (set {set_name!r}); {how}.")
    bundle = joblib.load(path)
    if not isinstance(bundle, dict) or bundle.get("schema") != PROBE_SCHEMA:
        raise WspecError(f"{path} is not a wspec probe of this version; {how}.")
    if bundle["model_identity"] != identity:
        raise WspecError(
            f"the probe at {path} was trained for {bundle['model_identity']}, not {identity}; "
            f"{how}."
        )
    return bundle


def cv_auroc(bundle: dict, set_name: str = "all") -> dict:
    """The stored cross-validated AUROC row of detector (e) on one evaluation set."""
    rows = [r for r in bundle["cv"] if r["set"] == set_name and r["detector"] == probe.COMBINED]
    return rows[0]


def user_manifest(paths: list[str]) -> pd.DataFrame:
    """A manifest of the user's files, read with the same checks as `wspec transcribe`."""
    from wspec.audio import SAMPLE_RATE, read_audio
    from wspec.stimuli.manifest import to_frame

    rows = []
    for i, path in enumerate(paths):
        audio = read_audio(path)  # bad audio: the same one clear error as transcribe
        file = Path(path)
        rows.append(
            {
                "id": f"user-{i:03d}-{file.stem}",
                "family": "user",
                "params": "{}",
                "seed": 0,
                "duration_s": audio.size / SAMPLE_RATE,
                "transcript": "",
                "source_id": "",
                "sha256": _sha256(file),
                "path": str(file),
            }
        )
    return to_frame(rows)


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def detect(loaded, manifest: pd.DataFrame, bundle: dict) -> pd.DataFrame:
    """One row per file of a `user_manifest`: transcript, Whisper's signals, spectral
    features and p_hallucination."""
    from wspec.pipeline import features_path, run_model

    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "user.parquet"
        results = run_model(loaded.name, "user", out=out, progress=False, manifest=manifest,
                            loaded=loaded)  # fmt: skip
        decodes = pd.read_parquet(out.with_name("user.decodes.parquet"))
        stored = pd.read_parquet(features_path(out)).drop(columns="model")
    spectral = probe.spectral_matrix(results, control=bundle["control"], K=bundle["K"])
    rows = decodes.set_index("stimulus_id")
    rows["duration_s"] = manifest.set_index("id")["duration_s"]
    rows = rows.join(spectral).join(stored.set_index("stimulus_id"))
    X = rows.reindex(columns=bundle["columns"]).to_numpy(float)
    rows["p_hallucination"] = bundle["pipeline"].predict_proba(X)[:, 1]
    rows["file"] = manifest.set_index("id")["path"]
    front = ["file", "p_hallucination", "text", *probe.WHISPER_FEATURES]
    features = [c for c in bundle["columns"] if c not in probe.WHISPER_FEATURES]
    return rows.reset_index(drop=True).reindex(columns=[*front, *features])

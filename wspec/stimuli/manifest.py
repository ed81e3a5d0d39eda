"""The manifest: one row per stimulus, stored as parquet beside the audio.

Columns (contract shared with capture, labels and the book):
  id, family, params (JSON str), seed, duration_s, transcript ('' for non-speech),
  source_id ('' unless derived from a clean or long utterance), sha256 (of the WAV bytes), path.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pandas as pd

from wspec.errors import WspecError
from wspec.paths import atomic_path, cache_dir

COLUMNS: tuple[str, ...] = (
    "id",
    "family",
    "params",
    "seed",
    "duration_s",
    "transcript",
    "source_id",
    "sha256",
    "path",
)
FAMILIES: tuple[str, ...] = (
    "clean",
    "long_clean",
    "short_clean",
    "nonspeech",
    "noisy_snr",
    "trailing_silence",
    "repeated_syllables",
    "reversed",
    "hell",
    "pgd_untargeted",
    "pgd_targeted",
    "gauss_control",
    "user",
)
MANIFEST_NAME = "manifest.parquet"


def set_dir(set_name: str) -> Path:
    """Cache folder of a stimulus set (audio/ + manifest.parquet)."""
    return cache_dir("stimuli", set_name)


def params_json(params: dict) -> str:
    """Canonical JSON (sorted keys) so equal parameters give equal strings."""
    return json.dumps(params, sort_keys=True, separators=(",", ":"))


def to_frame(rows: list[dict]) -> pd.DataFrame:
    """Rows → manifest DataFrame with the contract's columns and dtypes, in row order."""
    df = pd.DataFrame(rows, columns=list(COLUMNS))
    df["seed"] = df["seed"].astype("int64")
    df["duration_s"] = df["duration_s"].astype("float64")
    for col in ("id", "family", "params", "transcript", "source_id", "sha256", "path"):
        df[col] = df[col].astype(str)
    return df


def save_manifest(df: pd.DataFrame, path: Path) -> None:
    """Write the manifest atomically as parquet."""
    with atomic_path(path) as tmp:
        df.to_parquet(tmp, index=False)


def load_manifest(set_name: str = "default") -> pd.DataFrame:
    """Read a built set's manifest; says how to build it when it is missing."""
    path = cache_dir("stimuli") / set_name / MANIFEST_NAME  # no set_dir: do not create it
    if not path.is_file():
        raise WspecError(
            f"stimulus set {set_name!r} is not built yet; "
            f"run `wspec stimuli build --set {set_name}`."
        )
    return pd.read_parquet(path)


def manifest_hash(df: pd.DataFrame) -> str:
    """sha256 over (id, sha256) pairs in id order: changes iff some stimulus' bytes change."""
    h = hashlib.sha256()
    for sid, digest in sorted(zip(df["id"], df["sha256"], strict=True)):
        h.update(f"{sid}:{digest}\n".encode())
    return h.hexdigest()

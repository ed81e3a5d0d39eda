"""The stress set: clean (sentence, long, short), non-speech, degraded, "Hell" (and, per
model, attacked) stimuli.

from wspec.stimuli import build_stimuli, load_manifest
manifest = build_stimuli("ci")        # builds or completes the cached set
manifest = load_manifest("default")   # reads a built set
"""

from __future__ import annotations

from wspec.stimuli.build import add_user_folder, build_stimuli, design
from wspec.stimuli.manifest import COLUMNS, FAMILIES, load_manifest, manifest_hash, set_dir

__all__ = [
    "COLUMNS",
    "FAMILIES",
    "add_user_folder",
    "build_stimuli",
    "design",
    "load_manifest",
    "manifest_hash",
    "set_dir",
]

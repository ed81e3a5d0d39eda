"""Published Whisper architectures, so `random:<name>` works without any download.

Dimensions are those of openai-whisper's ModelDimensions for each release. Only
architectures whose vocabulary matches a bundled tokenizer are listed (large-v3
changed the special-token layout; for it use `random:<hub id>` with a cached config).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Arch:
    d_model: int
    heads: int
    encoder_layers: int
    decoder_layers: int
    n_mels: int = 80

    def tokenizer_source(self, english_only: bool) -> str:
        """Bundled checkpoint whose tokenizer has this vocabulary."""
        return "tiny.en" if english_only else "base"


ARCHS: dict[str, Arch] = {
    "tiny": Arch(384, 6, 4, 4),
    "base": Arch(512, 8, 6, 6),
    "small": Arch(768, 12, 12, 12),
    "medium": Arch(1024, 16, 24, 24),
    "large-v2": Arch(1280, 20, 32, 32),
}


def lookup(name: str) -> tuple[Arch, bool] | None:
    """(architecture, english_only) for names like 'small' or 'small.en'."""
    english_only = name.endswith(".en")
    arch = ARCHS.get(name.removesuffix(".en"))
    if arch is None or (english_only and name.startswith("large")):
        return None
    return arch, english_only

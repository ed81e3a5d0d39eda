"""Published Whisper architectures, so `random:<name>` works without any download.

Dimensions are those of openai-whisper's ModelDimensions for each release, including the
paper's largest model: large-v3 and large-v3-turbo (128 mel bins; turbo keeps large-v3's
encoder and has 4 decoder layers). An untrained control of those two is built with base's
multilingual tokenizer: 51,865 tokens where the released models have 51,866 (one more language
token), which an untrained network has no use for.

The same table gives a model's *scale* from its loaded config (`scale_of`), so the paper's
claims scoped to "large" models follow the weights, not the name a folder happens to have.
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
    "large-v3": Arch(1280, 20, 32, 32, n_mels=128),
    "large-v3-turbo": Arch(1280, 20, 32, 4, n_mels=128),
}
#: The paper's scale classes: "large" (Regime II, its Large-v3-Turbo) and "intermediate".
LARGE_WIDTH = ARCHS["large-v2"].d_model


def family_of(config) -> str | None:
    """The release whose dimensions a WhisperConfig has (width, depths, mel bins), or None."""
    dims = (config.d_model, config.encoder_layers, config.decoder_layers, config.num_mel_bins)
    for name, a in ARCHS.items():
        if (a.d_model, a.encoder_layers, a.decoder_layers, a.n_mels) == dims:
            return name
    return None


def scale_of(config) -> str:
    """ "large" for the large releases (by dimensions; an unlisted model by its width, at
    least large's), else "intermediate": the scope of the paper's claims C2 and C4."""
    family = family_of(config)
    if family is not None:
        return "large" if family.startswith("large") else "intermediate"
    return "large" if config.d_model >= LARGE_WIDTH else "intermediate"


def lookup(name: str) -> tuple[Arch, bool] | None:
    """(architecture, english_only) for names like 'small' or 'small.en'."""
    english_only = name.endswith(".en")
    arch = ARCHS.get(name.removesuffix(".en"))
    if arch is None or (english_only and name.startswith("large")):
        return None
    return arch, english_only

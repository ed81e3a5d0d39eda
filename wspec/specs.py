"""Model spec strings: the one rule for "is this an untrained control".

`random:<name>` is an untrained Whisper of that architecture (`wspec.models.resolve`); the
book treats it as a control everywhere, never as a model whose claims are judged.
"""

from __future__ import annotations

RANDOM_PREFIX = "random:"


def is_untrained(spec: str) -> bool:
    """True for an untrained control (``random:<name>``)."""
    return spec.strip().lower().startswith(RANDOM_PREFIX)


def untrained_twin(spec: str) -> str:
    """Spec of the untrained model with the same architecture ("tiny.en" -> "random:tiny.en")."""
    return spec if is_untrained(spec) else f"{RANDOM_PREFIX}{spec}"


def trained_models(specs: list[str]) -> list[str]:
    """The trained models of a run list; all of them if only untrained ones were run (then the
    controls are what there is to show)."""
    return [s for s in specs if not is_untrained(s)] or list(specs)

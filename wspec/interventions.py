"""Run a Whisper decode with its activations cached, or with chosen heads patched.

TransformerLens-style entry points around `wspec.capture` and `wspec.decoding`:

* `run_with_cache(loaded, audio, names)` decodes one clip greedily and returns the decode
  with the captured sites (`wspec.capture.Captured`): the one start/decode/collect sequence
  that callers used to write by hand.
* `run_with_hooks(loaded, audio, patches)` decodes with some decoder cross-attention heads
  *patched*: a head's contribution is its slice of the attention output before the output
  projection (``out_proj`` mixes the heads, so this is the last place where one head's part
  can be removed alone). ``"zero"`` sets the slice to 0; ``"mean"`` replaces it with a fixed
  vector, normally the head's mean output over reference decodes (`head_means`), so the
  layer keeps its average input and only the clip-specific part is removed.
* `head_outputs(loaded, audio)` records every cross-attention head's output over the
  decision rows of the natural decode (rows as in `wspec.capture`), for per-head statistics.

The patches are forward pre-hooks on ``encoder_attn.out_proj``, removed when the decode ends
(also on an exception), so a patched model never leaks into a later plain decode.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from wspec.capture import ActivationCapture, Captured, encoder_frames
from wspec.decoding import DEFAULT_MAX_NEW_TOKENS, Decoded, greedy_decode
from wspec.errors import WspecError
from wspec.models.loaded import LoadedWhisper

ABLATIONS: tuple[str, ...] = ("zero", "mean")

Head = tuple[int, int]  # (decoder layer, head)


@dataclass(frozen=True)
class HeadPatch:
    """Replace the output of cross-attention head `head` of decoder layer `layer`.

    `mode` "zero" writes zeros; "mean" writes `value` (a vector of the head's width).
    """

    layer: int
    head: int
    mode: str = "zero"
    value: torch.Tensor | None = None


def all_heads(loaded: LoadedWhisper) -> list[Head]:
    """Every (layer, head) of the decoder's cross-attention, layer-major."""
    cfg = loaded.model.config
    return [(i, h) for i in range(cfg.decoder_layers) for h in range(cfg.decoder_attention_heads)]


def _head_dim(loaded: LoadedWhisper) -> int:
    cfg = loaded.model.config
    return cfg.d_model // cfg.decoder_attention_heads


def _check(loaded: LoadedWhisper, patches: Sequence[HeadPatch]) -> None:
    valid = set(all_heads(loaded))
    for p in patches:
        if (p.layer, p.head) not in valid:
            raise WspecError(
                f"no cross-attention head {(p.layer, p.head)} in {loaded.name}; layers and "
                f"heads count from 0 (see wspec.interventions.all_heads)"
            )
        if p.mode not in ABLATIONS:
            raise WspecError(f"unknown ablation {p.mode!r}; use one of {ABLATIONS}")
        if p.mode == "mean" and (p.value is None or p.value.numel() != _head_dim(loaded)):
            raise WspecError(
                f"mean ablation of head {(p.layer, p.head)} needs `value` with "
                f"{_head_dim(loaded)} entries; compute it with wspec.interventions.head_means"
            )


def _patch_hook(patches: list[HeadPatch], width: int):
    def hook(_module, inputs):
        x = inputs[0].clone()  # (batch, rows, heads × width)
        for p in patches:
            cols = slice(p.head * width, (p.head + 1) * width)
            x[..., cols] = 0.0 if p.mode == "zero" else p.value.to(x.dtype).to(x.device)
        return (x, *inputs[1:])

    return hook


@contextlib.contextmanager
def patched(loaded: LoadedWhisper, patches: Iterable[HeadPatch]) -> Iterator[None]:
    """Inside the block every forward pass of `loaded.model` runs with `patches` applied."""
    patches = list(patches)
    _check(loaded, patches)
    layers = loaded.model.model.decoder.layers
    by_layer: dict[int, list[HeadPatch]] = {}
    for p in patches:
        by_layer.setdefault(p.layer, []).append(p)
    width = _head_dim(loaded)
    handles = []
    try:
        for i, group in by_layer.items():
            out_proj = layers[i].encoder_attn.out_proj
            handles.append(out_proj.register_forward_pre_hook(_patch_hook(group, width)))
        yield
    finally:
        for handle in handles:
            handle.remove()


def run_with_cache(
    loaded: LoadedWhisper,
    audio: np.ndarray,
    names: Iterable[str] | None = None,
    *,
    max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS,
    min_new_tokens: int = 0,
) -> tuple[Decoded, Captured]:
    """Greedy decode of `audio` and the sites `names` (all if None) it passed through."""
    with ActivationCapture(loaded.model, names) as cap:
        cap.start(encoder_frames(len(audio)))
        decoded = greedy_decode(
            loaded, audio, max_new_tokens=max_new_tokens, min_new_tokens=min_new_tokens
        )
        return decoded, cap.collect()


def run_with_hooks(
    loaded: LoadedWhisper,
    audio: np.ndarray,
    patches: Iterable[HeadPatch],
    *,
    max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS,
) -> Decoded:
    """Greedy decode of `audio` with the cross-attention heads in `patches` ablated."""
    with patched(loaded, patches):
        return greedy_decode(loaded, audio, max_new_tokens=max_new_tokens)


def head_outputs(
    loaded: LoadedWhisper, audio: np.ndarray, *, max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS
) -> tuple[Decoded, torch.Tensor]:
    """The plain decode and every cross-attention head's output on its decision rows.

    Returns a (layers, heads, rows, width) float32 tensor; rows = the natural decode's
    tokens + 1 (the last prompt position and each generated token, as `wspec.capture`).
    """
    cfg = loaded.model.config
    width = _head_dim(loaded)
    steps: dict[int, list[torch.Tensor]] = {i: [] for i in range(cfg.decoder_layers)}

    def recorder(i: int):
        def hook(_module, inputs):
            steps[i].append(inputs[0][0].detach().float())

        return hook

    layers = loaded.model.model.decoder.layers
    handles = [
        layers[i].encoder_attn.out_proj.register_forward_pre_hook(recorder(i)) for i in steps
    ]
    try:
        decoded = greedy_decode(loaded, audio, max_new_tokens=max_new_tokens)
    finally:
        for handle in handles:
            handle.remove()
    first = steps[0][0].shape[0]  # step 0 holds the whole prompt
    n_rows = len(decoded.tokens) + 1
    per_layer = [torch.cat(steps[i])[first - 1 : first - 1 + n_rows] for i in steps]
    stacked = torch.stack(per_layer)  # (layers, rows, heads × width)
    n_layers = stacked.shape[0]
    return decoded, stacked.reshape(n_layers, -1, cfg.decoder_attention_heads, width).transpose(
        1, 2
    )


def head_means(outputs: Iterable[torch.Tensor]) -> torch.Tensor:
    """Mean output of every head over all rows of several `head_outputs` tensors.

    Returns (layers, heads, width): the `value` of a mean ablation, `means[layer, head]`.
    """
    outputs = list(outputs)
    if not outputs:
        raise WspecError("head_means needs the head outputs of at least one reference decode")
    return torch.cat(outputs, dim=2).mean(dim=2)


def ablation(
    heads: Iterable[Head], mode: str = "zero", means: torch.Tensor | None = None
) -> list[HeadPatch]:
    """Patches that ablate `heads` (mean ablation reads each head's vector from `means`)."""
    if mode == "mean" and means is None:
        raise WspecError("mean ablation needs `means` (wspec.interventions.head_means)")
    return [HeadPatch(i, h, mode, None if mode == "zero" else means[i, h]) for i, h in heads]

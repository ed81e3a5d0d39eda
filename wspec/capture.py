"""Capture Whisper activations per layer and component while the model decodes.

A *site* is one (layer, component) place in the network with a stable string name,
e.g. ``"decoder.3.cross_attn"``.  `ActivationCapture` registers forward hooks on exactly
the requested sites, keeps only what the spectral metrics need, and removes every hook
when its ``with`` block ends — also when decoding raises.

What each site keeps, per stimulus (T = decoder rows, F = unpadded encoder frames):

=====================  ==============================================  ============
site                   what                                            matrix
=====================  ==============================================  ============
encoder.i.self_attn    self-attention output (after out_proj)          F × d
encoder.i.residual     residual stream after layer i                    F × d
decoder.i.self_attn    self-attention output (after out_proj)          T × d
decoder.i.self_attn_map  causal self-attention weights, head-averaged  T × (all positions)
decoder.i.cross_attn   cross-attention output (after out_proj)         T × d
decoder.i.cross_attn_map cross-attention weights, head-averaged        T × 1500
                       (per head as well, in `Captured.head_maps`:      H × T × 1500)
decoder.i.ffn          FFN output (fc2)                                T × d
decoder.i.ffn_act      post-GELU FFN hidden state (input of fc2)       T × 4d
decoder.i.residual     residual stream after layer i                    T × d
=====================  ==============================================  ============

Decoder rows are the *decision positions*: the last prompt position (which predicts the
first token) and every generated token fed back, i.e. T = n_tokens + 1 when decoding ended
with EOT.  Greedy decoding with KV cache runs the prompt in step 0 and one token per
later step; the hooks concatenate the steps.  Encoder matrices are cut to the frames the
audio actually covers (Whisper pads every clip to 30 s = 1500 frames; the padded frames
would otherwise dominate the covariance).  Cross-attention maps keep all 1500 keys:
attention to the padding is part of what the decoder does.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field

import torch
from torch import nn

from wspec.errors import WspecError

ENCODER_FRAMES = 1500
SAMPLES_PER_FRAME = 320  # 10 ms mel hop × conv stride 2 at 16 kHz

ENCODER_COMPONENTS: tuple[str, ...] = ("self_attn", "residual")
DECODER_COMPONENTS: tuple[str, ...] = (
    "self_attn",
    "self_attn_map",
    "cross_attn",
    "cross_attn_map",
    "ffn",
    "ffn_act",
    "residual",
)
MAP_COMPONENTS: frozenset[str] = frozenset({"self_attn_map", "cross_attn_map"})


@dataclass(frozen=True)
class Site:
    """One capture site: `name` is "<stack>.<layer>.<part>"."""

    stack: str  # "encoder" | "decoder"
    layer: int
    part: str  # one of ENCODER_COMPONENTS / DECODER_COMPONENTS

    @property
    def name(self) -> str:
        return f"{self.stack}.{self.layer}.{self.part}"

    @property
    def component(self) -> str:
        """Component name used in the results table, e.g. "dec_cross_attn_map"."""
        return f"{self.stack[:3]}_{self.part}"

    @property
    def is_map(self) -> bool:
        return self.part in MAP_COMPONENTS


def all_sites(config) -> list[Site]:
    """Every site of a Whisper config, in a fixed order: encoder layers, then decoder layers."""
    enc = [Site("encoder", i, p) for i in range(config.encoder_layers) for p in ENCODER_COMPONENTS]
    dec = [Site("decoder", i, p) for i in range(config.decoder_layers) for p in DECODER_COMPONENTS]
    return enc + dec


def site_names(config) -> list[str]:
    """Ordered site names of a Whisper config (see module docstring)."""
    return [s.name for s in all_sites(config)]


def select_sites(config, names: Iterable[str] | None = None) -> list[Site]:
    """Sites whose names are in `names` (all if None), in canonical order; unknown names fail."""
    sites = all_sites(config)
    if names is None:
        return sites
    wanted = set(names)
    unknown = wanted - {s.name for s in sites}
    if unknown:
        raise WspecError(
            f"unknown capture site(s) {sorted(unknown)}; names look like 'decoder.0.cross_attn' "
            f"(see wspec.capture.site_names(config))"
        )
    return [s for s in sites if s.name in wanted]


def encoder_frames(n_samples: int) -> int:
    """Encoder frames covered by `n_samples` of 16 kHz audio (1..1500)."""
    return max(1, min(ENCODER_FRAMES, math.ceil(n_samples / SAMPLES_PER_FRAME)))


@dataclass
class Captured:
    """What one decode left behind: float32 matrices keyed by site name (rows first)."""

    matrices: dict[str, torch.Tensor] = field(default_factory=dict)
    #: Per-head cross-attention maps (H, T, 1500) by site name, for LapEigvals features.
    head_maps: dict[str, torch.Tensor] = field(default_factory=dict)
    n_rows_decoder: int = 0  # T: decision positions
    n_frames: int = 0  # F: unpadded encoder frames


class ActivationCapture:
    """Context manager that hooks the requested sites of `model` (a Whisper).

    Usage::

        with ActivationCapture(loaded.model, names) as cap:
            cap.start(encoder_frames(len(audio)))
            decoded = greedy_decode(loaded, audio)
            captured = cap.collect()

    Attention maps need eager attention; if the model uses another implementation it
    is switched to "eager" inside the block and restored afterwards.
    """

    def __init__(self, model: nn.Module, names: Iterable[str] | None = None) -> None:
        self.model = model
        self.sites = select_sites(model.config, names)
        self._handles: list[torch.utils.hooks.RemovableHandle] = []
        self._steps: dict[str, list[torch.Tensor]] = {}
        self._heads: dict[str, list[torch.Tensor]] = {}
        self._encoder: dict[str, torch.Tensor] = {}
        self._n_frames = ENCODER_FRAMES
        self._saved_attn: str | None = None

    # --- hook registration -------------------------------------------------------
    def __enter__(self) -> ActivationCapture:
        if any(s.is_map for s in self.sites):
            impl = getattr(self.model.config, "_attn_implementation", None)
            if impl != "eager":
                self._saved_attn = impl
                self.model.config._attn_implementation = "eager"
        try:
            self._register()
        except BaseException:
            self._remove()
            raise
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self._remove()

    def _remove(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
        if self._saved_attn is not None:
            self.model.config._attn_implementation = self._saved_attn
            self._saved_attn = None

    def _register(self) -> None:
        core = self.model.model
        by_layer: dict[tuple[str, int], set[str]] = {}
        for s in self.sites:
            by_layer.setdefault((s.stack, s.layer), set()).add(s.part)
        for (stack, i), parts in by_layer.items():
            layer = (core.encoder if stack == "encoder" else core.decoder).layers[i]
            prefix = f"{stack}.{i}."
            if stack == "encoder":
                for part, module in (("self_attn", layer.self_attn), ("residual", layer)):
                    if part in parts:
                        self._hook(module, self._encoder_hook(prefix + part))
                continue
            for attn, module in (
                ("self_attn", layer.self_attn),
                ("cross_attn", layer.encoder_attn),
            ):
                keep_out = attn in parts
                keep_map = f"{attn}_map" in parts
                if keep_out or keep_map:
                    self._hook(module, self._attention_hook(prefix + attn, keep_out, keep_map))
            if "ffn" in parts:
                self._hook(layer.fc2, self._step_hook(prefix + "ffn"))
            if "ffn_act" in parts:
                handle = layer.fc2.register_forward_pre_hook(self._pre_hook(prefix + "ffn_act"))
                self._handles.append(handle)
            if "residual" in parts:
                self._hook(layer, self._step_hook(prefix + "residual"))

    def _hook(self, module: nn.Module, fn) -> None:
        self._handles.append(module.register_forward_hook(fn))

    # --- hooks (kept light: slice, head-average, detach; no copies to host) ------
    def _encoder_hook(self, name: str):
        def hook(_module, _inputs, output):
            hidden = output[0] if isinstance(output, tuple) else output
            self._encoder[name] = hidden[0, : self._n_frames].detach().float()

        return hook

    def _step_hook(self, name: str):
        def hook(_module, _inputs, output):
            hidden = output[0] if isinstance(output, tuple) else output
            self._steps[name].append(hidden[0].detach().float())

        return hook

    def _pre_hook(self, name: str):
        def hook(_module, inputs):
            self._steps[name].append(inputs[0][0].detach().float())

        return hook

    def _attention_hook(self, name: str, keep_out: bool, keep_map: bool):
        def hook(_module, _inputs, output):
            if keep_out:
                self._steps[name].append(output[0][0].detach().float())
            if keep_map:
                weights = output[1]
                if weights is None:
                    raise WspecError(
                        f"{name}: attention weights are not returned; load the model with "
                        f"attn_implementation='eager' (wspec.models.load does)"
                    )
                per_head = weights[0].detach().float()  # (H, q, keys): one step is small
                self._steps[f"{name}_map"].append(per_head.mean(dim=0))
                if f"{name}_map" in self._heads:
                    self._heads[f"{name}_map"].append(per_head)

        return hook

    # --- per-stimulus use --------------------------------------------------------
    def start(self, n_frames: int = ENCODER_FRAMES) -> None:
        """Forget the previous stimulus; keep `n_frames` encoder frames for the next one."""
        self._n_frames = int(n_frames)
        self._encoder = {}
        self._steps = {s.name: [] for s in self.sites if s.stack == "decoder"}
        self._heads = {s.name: [] for s in self.sites if s.part == "cross_attn_map"}

    def collect(self) -> Captured:
        """Matrices of the decode since `start()`, decoder steps joined at decision rows."""
        out = Captured(n_frames=self._n_frames)
        out.matrices.update(self._encoder)
        missing = [
            s.name for s in self.sites if s.stack == "encoder" and s.name not in self._encoder
        ]
        for site in self.sites:
            if site.stack == "encoder":
                continue
            steps = self._steps[site.name]
            if not steps:
                missing.append(site.name)
                continue
            first = steps[0].shape[0]  # step 0 holds the whole prompt
            full = _join_causal(steps) if site.part == "self_attn_map" else torch.cat(steps)
            out.matrices[site.name] = full[first - 1 :]
            out.n_rows_decoder = full.shape[0] - first + 1
            if site.name in self._heads:
                out.head_maps[site.name] = torch.cat(self._heads[site.name], dim=1)[:, first - 1 :]
        if missing:
            raise WspecError(
                f"no activations reached {missing[:3]}…; run the model inside the capture block "
                f"(after start())"
            )
        return out


def _join_causal(steps: list[torch.Tensor]) -> torch.Tensor:
    """Stack per-step (q, kv) self-attention rows into one (rows, rows) causal map."""
    rows = sum(s.shape[0] for s in steps)
    full = steps[0].new_zeros(rows, rows)
    start = 0
    for s in steps:
        full[start : start + s.shape[0], : s.shape[1]] = s
        start += s.shape[0]
    return full

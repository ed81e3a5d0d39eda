"""Gradient attacks on the waveform under an SNR budget (Olivier & Raj 2022), and their control.

- untargeted L2-PGD: maximize the teacher-forced cross-entropy of the reference transcript;
- targeted L2-PGD: minimize the cross-entropy of a chosen hallucination phrase;
- Gaussian control: white Gaussian noise of exactly the same L2 norm as the budget.

Budget: ε = ‖x‖₂ / 10^(SNR/20), so ‖δ‖₂ ≤ ε means SNR(x, δ) ≥ the requested SNR. Each step
moves δ by α along the normalized gradient and projects back onto the ε-ball; the start is a
random point δ₀ = u·ε·z/‖z‖ (z Gaussian, u uniform), drawn from a seeded CPU torch.Generator
so runs are reproducible on any device. The step α = ε/√(steps − 1) is sized to reach the
budget (see `step_fraction`). Gradients flow through the torch
log-mel (wspec.melspec), so the whole path waveform → features → loss is differentiable.

PGD runs on a batch of utterances at once: a forward and backward pass of Whisper costs
the same 30 s window whatever the clip's length, and a batch amortizes it better on a CPU.
Waveforms are zero-padded to a common length under a mask, so padding is never perturbed,
and each utterance keeps its own budget, projection, loss and random start: a batched
attack equals attacking each utterance alone up to float32 rounding (tests/test_attacks.py).

Success (recorded with each attacked stimulus): untargeted — WER ≥ 0.5 or CER > 0.5 against
the reference after greedy decoding; targeted — normalized output equals the target.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from wspec import cache as wcache
from wspec.audio import SAMPLE_RATE, read_audio, write_audio
from wspec.decoding import greedy_decode
from wspec.labels import error_rates, normalize
from wspec.melspec import log_mel_for
from wspec.paths import atomic_write_text, safe_name
from wspec.progress import track
from wspec.stimuli.manifest import (
    MANIFEST_NAME,
    manifest_hash,
    params_json,
    save_manifest,
    to_frame,
)

DEFAULT_TARGET = " Thank you for watching."
BATCH_SIZE = 4
UNTARGETED_WER = 0.5
UNTARGETED_CER = 0.5
FAMILIES: tuple[str, ...] = ("pgd_untargeted", "pgd_targeted", "gauss_control")
IGNORE = -100  # label of decoder positions past an utterance's own transcript
TOKEN_BUCKET = 32  # decoder label positions are padded to a multiple of this


#: The book's attack settings per stimulus set, shared by the model-run and stress-set
#: chapters so both read the same cached clips. Other sets use "default".
# The full build attacks 12 sentences, 3 per voice, because the bootstrap resamples source
# sentences (one attacked sentence is one unit, whatever its SNRs and families); the ci set
# keeps 2, the fewest that give an interval at all. Three steps is what a cold CPU build can
# afford for 72 PGD runs per model (one step of tiny.en costs ~1 s per utterance on 2 cores;
# Olivier and Raj use 100–200), so success rates are lower bounds; the step size still
# brings every perturbation to its budget (`step_fraction`).
BOOK_SETTINGS: dict[str, dict] = {
    "ci": {"snrs": (35.0, 45.0), "steps": 3, "n_utts": 2},
    "default": {"snrs": (35.0, 40.0, 45.0), "steps": 3, "n_utts": 12},
}


def book_settings(stimulus_set: str) -> dict:
    """Keyword arguments of `build_attack_stimuli` for the book's runs on `stimulus_set`."""
    return dict(BOOK_SETTINGS.get(stimulus_set, BOOK_SETTINGS["default"]))


def epsilon_for_snr(audio: np.ndarray | torch.Tensor, snr_db: float) -> float:
    """L2 budget ε = ‖x‖₂ / 10^(SNR/20)."""
    norm = float(torch.linalg.vector_norm(torch.as_tensor(audio, dtype=torch.float64)))
    return norm / 10 ** (snr_db / 20)


def text_tokens(loaded, text: str) -> list[int]:
    """Token ids of a transcript as Whisper emits it (leading space, no special tokens)."""
    return loaded.tokenizer.encode(" " + text.strip(), add_special_tokens=False)


def teacher_forced_loss(
    loaded, features: torch.Tensor, token_lists: Sequence[list[int]]
) -> torch.Tensor:
    """Per-utterance mean cross-entropy of each `tokens` + EOT after the prompt, shape (batch,).

    Transcripts are right-padded to a multiple of TOKEN_BUCKET labels, and padded labels are
    ignored. The decoder is causal, so padding cannot change an utterance's logits in exact
    arithmetic; in float32 a different sequence length reorders reductions (the gradient
    moved by ~5e-5 relative, and PGD amplifies that). A bucket shared by the batch and by
    each utterance alone (every book sentence has < 32 tokens) keeps them bit-identical.
    """
    prompt = list(loaded.sot_sequence)
    width = -(-(max(len(t) for t in token_lists) + 1) // TOKEN_BUCKET) * TOKEN_BUCKET
    labels = [t + [loaded.eot_id] + [IGNORE] * (width - len(t) - 1) for t in token_lists]
    ids = [prompt + [loaded.eot_id if i == IGNORE else i for i in row[:-1]] for row in labels]
    out = loaded.model(
        input_features=features, decoder_input_ids=torch.tensor(ids, device=loaded.device)
    )
    logits = out.logits[:, len(prompt) - 1 :].float()
    target = torch.tensor(labels, device=loaded.device)
    # one row per position, vocabulary contiguous: a log-softmax over a strided class axis
    # sums 51 864 floats in another order and moved the loss by ~1e-4
    ce = torch.nn.functional.cross_entropy(
        logits.reshape(-1, logits.shape[-1]),
        target.reshape(-1),
        ignore_index=IGNORE,
        reduction="none",
    ).reshape(target.shape)
    return ce.sum(dim=1) / (target != IGNORE).sum(dim=1)


@dataclass(frozen=True, eq=False)
class AttackJob:
    """One PGD run: the clean waveform, the phrase's tokens, the budget and the start's seed.

    Untargeted jobs push the reference transcript's tokens away; targeted jobs pull the
    target phrase's tokens in.
    """

    audio: np.ndarray
    tokens: list[int]
    snr_db: float
    targeted: bool
    seed: int


@dataclass
class AttackResult:
    audio: np.ndarray  # attacked waveform, float32, the clean clip's length
    epsilon: float
    delta_norm: float
    loss_start: float
    loss_end: float


def step_fraction(steps: int) -> float:
    """α/ε that lets `steps` PGD steps reach the ε-sphere: 1/√(steps − 1), at most 1.

    Consecutive normalized gradients of Whisper's loss on the waveform are almost orthogonal
    to each other and to δ (|cos| < 0.08 on tiny.en), so the steps add up like a random walk,
    ‖δ_k‖² ≈ ‖δ₀‖² + k·α², not linearly. With α = ε/√(steps − 1) δ is on the sphere after
    steps − 1 steps whatever the random start, and the last step moves along it. The former
    fixed α = 0.1·ε left 10 steps 2–9 dB short of the budget (tiny.en, ci set).
    """
    return 1.0 / max(steps - 1, 1) ** 0.5


def _row_normalized(v: torch.Tensor) -> torch.Tensor:
    return v / torch.linalg.vector_norm(v, dim=1, keepdim=True).clamp_min(1e-20)


def _project(delta: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
    """Each row back onto its own ε-ball (rows already inside are left alone)."""
    norm = torch.linalg.vector_norm(delta, dim=1, keepdim=True)
    return delta * torch.clamp(eps / norm.clamp_min(1e-20), max=1.0)


def _random_start(job: AttackJob, eps: float) -> torch.Tensor:
    """δ₀ of one job from its own seeded generator, so it is the same in any batch."""
    gen = torch.Generator().manual_seed(job.seed)
    z = torch.randn(job.audio.shape, generator=gen, dtype=torch.float32)
    u = float(torch.rand((), generator=gen))
    return z / torch.linalg.vector_norm(z).clamp_min(1e-20) * eps * u


def _padded(rows: Sequence[torch.Tensor]) -> torch.Tensor:
    """(batch, longest) zero-padded stack: zeros are what Whisper's 30 s window adds anyway."""
    out = torch.zeros(len(rows), max(r.numel() for r in rows))
    for i, r in enumerate(rows):
        out[i, : r.numel()] = r
    return out


@contextlib.contextmanager
def _fused_attention(loaded) -> Iterator[None]:
    """PyTorch's fused attention for PGD, eager again afterwards.

    `wspec.models.load` selects eager attention because the hooks need attention maps; PGD
    needs none, and the fused kernel makes its forward and backward passes about a quarter
    cheaper on a CPU. Only the gradient's direction is affected (in the last float bits);
    the success decode runs with the model's own setting.
    """
    config = loaded.model.config
    saved = config._attn_implementation
    config._attn_implementation = "sdpa"
    try:
        yield
    finally:
        config._attn_implementation = saved


def pgd_l2(loaded, jobs: Sequence[AttackJob], *, steps: int) -> list[AttackResult]:
    """L2-PGD on a batch of waveforms; untargeted rows ascend, targeted rows descend the CE."""
    eps_list = [epsilon_for_snr(j.audio, j.snr_db) for j in jobs]
    dev = loaded.device
    x = _padded([torch.as_tensor(np.asarray(j.audio, dtype=np.float32)) for j in jobs]).to(dev)
    mask = _padded([torch.ones(j.audio.size) for j in jobs]).to(dev)
    delta = _padded([_random_start(j, e) for j, e in zip(jobs, eps_list, strict=True)]).to(dev)
    eps = torch.tensor(eps_list, dtype=torch.float32, device=dev).unsqueeze(1)
    sign = torch.tensor([-1.0 if j.targeted else 1.0 for j in jobs], device=dev)
    tokens = [j.tokens for j in jobs]
    alpha = step_fraction(steps) * eps
    first = None
    with _fused_attention(loaded):
        for _ in range(steps):
            delta.requires_grad_(True)
            loss = teacher_forced_loss(loaded, log_mel_for(loaded, x + delta * mask), tokens)
            (grad,) = torch.autograd.grad((sign * loss).sum(), delta)
            first = loss.detach() if first is None else first
            with torch.no_grad():
                delta = _project(delta + alpha * _row_normalized(grad), eps)
        with torch.no_grad():
            final = teacher_forced_loss(loaded, log_mel_for(loaded, x + delta * mask), tokens)
    first = final if first is None else first
    return [
        AttackResult(
            audio=(x[i, :n] + delta[i, :n]).cpu().numpy().astype(np.float32),
            epsilon=eps_list[i],
            delta_norm=float(torch.linalg.vector_norm(delta[i, :n])),
            loss_start=float(first[i]),
            loss_end=float(final[i]),
        )
        for i, n in enumerate(j.audio.size for j in jobs)
    ]


def gaussian_control(audio: np.ndarray, snr_db: float, seed: int) -> np.ndarray:
    """x + δ with δ white Gaussian scaled to ‖δ‖₂ = ε exactly (the attack's full budget)."""
    rng = np.random.default_rng(seed)
    x = np.asarray(audio, dtype=np.float64)
    z = rng.standard_normal(x.size)
    return (x + z * (epsilon_for_snr(x, snr_db) / np.linalg.norm(z))).astype(np.float32)


def attack_success(family: str, reference: str, text: str, target: str = "") -> bool:
    """Untargeted: WER ≥ 0.5 or CER > 0.5; targeted: normalized exact match with the target."""
    if family == "pgd_targeted":
        return normalize(text) == normalize(target)
    wer, cer = error_rates(normalize(reference), normalize(text))
    return wer >= UNTARGETED_WER or cer > UNTARGETED_CER


def attack_summary(attacks: pd.DataFrame) -> pd.DataFrame:
    """Success rate, count and mean measured SNR per family and SNR budget."""
    params = pd.json_normalize(attacks["params"].map(json.loads).tolist())
    params["family"] = attacks["family"].to_numpy()
    out = params.groupby(["family", "snr_db"]).agg(
        n=("success", "size"),
        success_rate=("success", "mean"),
        snr_measured=("snr_measured", "mean"),
    )
    return out.reset_index()


def attack_sources(manifest: pd.DataFrame, n_utts: int) -> pd.DataFrame:
    """The first `n_utts` clean utterances: in the built sets, sentence i is read by voice
    i mod 4, so any multiple of 4 covers the voices equally."""
    return manifest[manifest["family"] == "clean"].head(n_utts)


def _num(x: float) -> str:
    return f"{x:g}".replace("-", "m").replace(".", "p")


@dataclass(frozen=True)
class _Clip:
    """One attacked stimulus to make: its source, budget, family, id and cache files."""

    src: tuple
    snr: float
    family: str
    sid: str
    wav: Path
    meta: Path
    seed: int

    @property
    def done(self) -> bool:
        return self.wav.is_file() and self.meta.is_file()


def build_attack_stimuli(
    loaded,
    manifest: pd.DataFrame,
    snrs: tuple[float, ...] = (35.0, 40.0, 45.0),
    steps: int = 3,
    n_utts: int = 4,
    target: str = DEFAULT_TARGET,
    seed: int = 0,
    families: tuple[str, ...] = FAMILIES,
    progress: bool = True,
    batch_size: int = BATCH_SIZE,
) -> pd.DataFrame:
    """Attack the first `n_utts` clean utterances of `manifest` at each SNR; manifest rows.

    `families` picks among pgd_untargeted, pgd_targeted, gauss_control. `params` (JSON)
    records the model, SNR, ε, ‖δ‖, steps, losses, the decoded text after the attack, the
    realised SNR (`snr_measured`) and `success`. Stored per model and per (attacked sources,
    settings, the code `wspec.cache.ATTACKS` declares); a stimulus whose WAV and JSON exist
    is not recomputed. PGD clips are made in fixed batches of `batch_size` (the job
    list cut in order), so a clip's bytes do not depend on which others were cached already.
    """
    sources = attack_sources(manifest, n_utts)
    settings = params_json(
        {
            "snrs": list(snrs),
            "steps": steps,
            "n_utts": n_utts,
            "target": target,
            "seed": seed,
            "batch_size": batch_size,
        }
    )
    key = wcache.ATTACKS.key(
        model=loaded.identity, sources=manifest_hash(sources), settings=settings
    )
    root = wcache.ATTACKS.dir(safe_name(loaded.name), key)
    clips = [
        _clip(loaded, root, src, float(snr), fam, seed)
        for src in sources.itertuples(index=False)
        for snr in snrs
        for fam in families
    ]
    pgd = [c for c in clips if c.family != "gauss_control"]
    batches = [pgd[i : i + batch_size] for i in range(0, len(pgd), batch_size)]
    batches += [[c] for c in clips if c.family == "gauss_control"]
    for batch in track(batches, f"attacks {loaded.name}", unit="batches", enabled=progress):
        if not all(c.done for c in batch):
            _make(loaded, batch, steps, target)
    df = to_frame([json.loads(c.meta.read_text(encoding="utf-8")) for c in clips])
    save_manifest(df, root / MANIFEST_NAME)
    return df


def _clip(loaded, root: Path, src, snr: float, family: str, seed: int) -> _Clip:
    sid = f"{family}-{safe_name(loaded.name)}-{src.id.removeprefix('clean-')}-{_num(snr)}db"
    audio_dir = root / "audio"
    stim_seed = (seed + zlib.crc32(sid.encode())) % 2**31
    return _Clip(
        src, snr, family, sid, audio_dir / f"{sid}.wav", audio_dir / f"{sid}.json", stim_seed
    )


def _make(loaded, batch: list[_Clip], steps: int, target: str) -> None:
    """Attack (or add noise to) every clip of one batch and write the missing ones."""
    clean = [read_audio(c.src.path) for c in batch]
    if batch[0].family == "gauss_control":
        c, audio = batch[0], clean[0]
        _write(loaded, c, audio, gaussian_control(audio, c.snr, c.seed), {}, target)
        return
    jobs = [
        AttackJob(
            audio,
            text_tokens(loaded, target if c.family == "pgd_targeted" else c.src.transcript),
            c.snr,
            c.family == "pgd_targeted",
            c.seed,
        )
        for c, audio in zip(batch, clean, strict=True)
    ]
    for c, audio, res in zip(batch, clean, pgd_l2(loaded, jobs, steps=steps), strict=True):
        if c.done:
            continue
        extra = {
            "steps": steps,
            "step_fraction": step_fraction(steps),
            "epsilon": res.epsilon,
            "delta_norm": res.delta_norm,
            "loss_start": res.loss_start,
            "loss_end": res.loss_end,
        }
        if c.family == "pgd_targeted":
            extra["target"] = target
        _write(loaded, c, audio, res.audio, extra, target)


def _write(loaded, c: _Clip, audio: np.ndarray, adv: np.ndarray, extra: dict, target: str) -> None:
    """Decode the attacked clip, judge success and store WAV + manifest row atomically."""
    decoded = greedy_decode(loaded, adv).text
    noise = np.sum((adv.astype(np.float64) - audio) ** 2)
    params = {
        "model": loaded.name,
        "snr_db": c.snr,
        "source": c.src.id,
        **extra,
        "decoded": decoded,
        "success": attack_success(c.family, c.src.transcript, decoded, target),
        "snr_measured": float(10 * np.log10(np.sum(audio.astype(np.float64) ** 2) / noise)),
    }
    data = write_audio(c.wav, adv)
    row = {
        "id": c.sid,
        "family": c.family,
        "params": params_json(params),
        "seed": c.seed,
        "duration_s": adv.size / SAMPLE_RATE,
        "transcript": c.src.transcript,
        "source_id": c.src.id,
        "sha256": hashlib.sha256(data).hexdigest(),
        "path": str(c.wav),
    }
    atomic_write_text(c.meta, json.dumps(row, sort_keys=True))

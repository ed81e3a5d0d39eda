"""Gradient attacks on the waveform under an SNR budget (Olivier & Raj 2022), and their control.

- untargeted L2-PGD: maximize the teacher-forced cross-entropy of the reference transcript;
- targeted L2-PGD: minimize the cross-entropy of a chosen hallucination phrase;
- Gaussian control: white Gaussian noise of exactly the same L2 norm as the budget.

Budget: ε = ‖x‖₂ / 10^(SNR/20), so ‖δ‖₂ ≤ ε means SNR(x, δ) ≥ the requested SNR. Each step
moves δ by α = 0.1·ε along the normalized gradient and projects back onto the ε-ball;
the start is a random point δ₀ = u·ε·z/‖z‖ (z Gaussian, u uniform), drawn from a seeded CPU
torch.Generator so runs are reproducible on any device. Gradients flow through the torch
log-mel (wspec.melspec), so the whole path waveform → features → loss is differentiable.

Success (recorded with each attacked stimulus): untargeted — WER ≥ 0.5 or CER > 0.5 against
the reference after greedy decoding; targeted — normalized output equals the target.
"""

from __future__ import annotations

import hashlib
import json
import re
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from wspec.audio import read_audio, write_audio
from wspec.decoding import greedy_decode
from wspec.labels import error_rates, normalize
from wspec.melspec import log_mel_for
from wspec.paths import atomic_write_text, cache_dir
from wspec.stimuli.manifest import (
    MANIFEST_NAME,
    manifest_hash,
    params_json,
    save_manifest,
    to_frame,
)

DEFAULT_TARGET = " Thank you for watching."
STEP_FRACTION = 0.1
UNTARGETED_WER = 0.5
UNTARGETED_CER = 0.5
FAMILIES: tuple[str, ...] = ("pgd_untargeted", "pgd_targeted", "gauss_control")


#: The book's attack settings per stimulus set, shared by the model-run and stress-set
#: chapters so both read the same cached clips. Few steps keep a CPU build short (Olivier and
#: Raj use 100–200), so success rates here are lower bounds. Other sets use "default".
# n_utts >= 2 everywhere: the paired bootstrap resamples source sentences, and one sentence
# gives no interval.
BOOK_SETTINGS: dict[str, dict] = {
    "ci": {"snrs": (35.0, 45.0), "steps": 10, "n_utts": 2},
    "default": {"snrs": (35.0, 40.0, 45.0), "steps": 20, "n_utts": 2},
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


def teacher_forced_loss(loaded, features: torch.Tensor, tokens: list[int]) -> torch.Tensor:
    """Mean cross-entropy of `tokens` + EOT after the model's prompt, given the features."""
    prompt = list(loaded.sot_sequence)
    ids = torch.tensor([prompt + tokens], device=loaded.device)
    labels = torch.tensor(tokens + [loaded.eot_id], device=loaded.device)
    logits = loaded.model(input_features=features, decoder_input_ids=ids).logits[0]
    return torch.nn.functional.cross_entropy(logits[len(prompt) - 1 :].float(), labels)


@dataclass
class AttackResult:
    audio: np.ndarray  # attacked waveform, float32
    epsilon: float
    delta_norm: float
    loss_start: float
    loss_end: float


def _normalized(v: torch.Tensor) -> torch.Tensor:
    return v / torch.linalg.vector_norm(v).clamp_min(1e-20)


def pgd_l2(
    loaded,
    audio: np.ndarray,
    tokens: list[int],
    snr_db: float,
    *,
    steps: int,
    targeted: bool,
    seed: int,
) -> AttackResult:
    """L2-PGD on the waveform; untargeted ascends, targeted descends the CE of `tokens`."""
    x = torch.as_tensor(np.asarray(audio, dtype=np.float32), device=loaded.device)
    eps = epsilon_for_snr(audio, snr_db)
    gen = torch.Generator().manual_seed(seed)
    z = torch.randn(x.shape, generator=gen, dtype=torch.float32)
    u = float(torch.rand((), generator=gen))
    delta = (_normalized(z) * eps * u).to(loaded.device)
    sign = -1.0 if targeted else 1.0
    losses = []
    for _ in range(steps):
        delta.requires_grad_(True)
        loss = teacher_forced_loss(loaded, log_mel_for(loaded, x + delta), tokens)
        (grad,) = torch.autograd.grad(loss, delta)
        losses.append(float(loss.detach()))
        with torch.no_grad():
            delta = delta + sign * STEP_FRACTION * eps * _normalized(grad)
            norm = float(torch.linalg.vector_norm(delta))
            if norm > eps:
                delta = delta * (eps / norm)
    with torch.no_grad():
        final = float(teacher_forced_loss(loaded, log_mel_for(loaded, x + delta), tokens))
    adv = (x + delta).detach().cpu().numpy().astype(np.float32)
    return AttackResult(
        adv, eps, float(torch.linalg.vector_norm(delta)), losses[0] if losses else final, final
    )


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


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._]+", "_", name)


def _num(x: float) -> str:
    return f"{x:g}".replace("-", "m").replace(".", "p")


def build_attack_stimuli(
    loaded,
    manifest: pd.DataFrame,
    snrs: tuple[float, ...] = (35.0, 40.0, 45.0),
    steps: int = 30,
    n_utts: int = 4,
    target: str = DEFAULT_TARGET,
    seed: int = 0,
    families: tuple[str, ...] = FAMILIES,
    progress: bool = True,
) -> pd.DataFrame:
    """Attack the first `n_utts` clean utterances of `manifest` at each SNR; manifest rows.

    `families` picks among pgd_untargeted, pgd_targeted, gauss_control. `params` (JSON)
    records the model, SNR, ε, ‖δ‖, steps, losses, the decoded text after the attack and
    `success`. Stored per
    model and per (manifest, settings) under cache_dir("stimuli", "attacks", ...); a stimulus
    whose WAV and JSON exist is not recomputed.
    """
    settings = params_json(
        {"snrs": list(snrs), "steps": steps, "n_utts": n_utts, "target": target, "seed": seed}
    )
    key = manifest_hash(manifest)[:12] + "-" + _sha(settings + loaded.identity)[:8]
    root = cache_dir("stimuli", "attacks", _safe(loaded.name), key)
    sources = manifest[manifest["family"] == "clean"].head(n_utts)
    jobs = [
        (src, float(snr), fam)
        for src in sources.itertuples(index=False)
        for snr in snrs
        for fam in families
    ]
    kwargs = {} if progress else {"disable": True}  # keep TQDM_DISABLE effective
    rows = []
    for src, snr, fam in tqdm(jobs, desc=f"attacks[{loaded.name}]", unit="clip", **kwargs):
        sid = f"{fam}-{_safe(loaded.name)}-{src.id.removeprefix('clean-')}-{_num(snr)}db"
        wav, meta = root / "audio" / f"{sid}.wav", root / "audio" / f"{sid}.json"
        if not (wav.is_file() and meta.is_file()):
            _attack_one(loaded, src, snr, fam, sid, steps, target, seed, wav, meta)
        rows.append(json.loads(meta.read_text(encoding="utf-8")))
    df = to_frame(rows)
    save_manifest(df, root / MANIFEST_NAME)
    return df


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def _attack_one(loaded, src, snr, fam, sid, steps, target, seed, wav: Path, meta: Path) -> None:
    audio = read_audio(src.path)
    stim_seed = (seed + zlib.crc32(sid.encode())) % 2**31
    params = {"model": loaded.name, "snr_db": snr, "source": src.id}
    if fam == "gauss_control":
        adv = gaussian_control(audio, snr, stim_seed)
    else:
        phrase = target if fam == "pgd_targeted" else src.transcript
        res = pgd_l2(
            loaded,
            audio,
            text_tokens(loaded, phrase),
            snr,
            steps=steps,
            targeted=fam == "pgd_targeted",
            seed=stim_seed,
        )
        adv = res.audio
        params.update(
            steps=steps,
            step_fraction=STEP_FRACTION,
            epsilon=res.epsilon,
            delta_norm=res.delta_norm,
            loss_start=res.loss_start,
            loss_end=res.loss_end,
        )
        if fam == "pgd_targeted":
            params["target"] = target
    decoded = greedy_decode(loaded, adv).text
    params.update(
        decoded=decoded,
        success=attack_success(fam, src.transcript, decoded, target),
        snr_measured=float(
            10 * np.log10(np.sum(audio.astype(np.float64) ** 2) / np.sum((adv - audio) ** 2.0))
        ),
    )
    data = write_audio(wav, adv)
    row = {
        "id": sid,
        "family": fam,
        "params": params_json(params),
        "seed": stim_seed,
        "duration_s": adv.size / 16_000,
        "transcript": src.transcript,
        "source_id": src.id,
        "sha256": hashlib.sha256(data).hexdigest(),
        "path": str(wav),
    }
    atomic_write_text(meta, json.dumps(row, sort_keys=True))

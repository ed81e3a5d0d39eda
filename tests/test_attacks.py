"""Attacks: SNR budget arithmetic, the teacher-forced loss, and real PGD on tiny.en."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from wspec.attacks import (
    build_attack_stimuli,
    epsilon_for_snr,
    gaussian_control,
    teacher_forced_loss,
    text_tokens,
)
from wspec.decoding import log_mel, teacher_forced_logits
from wspec.stimuli.degrade import snr_db


@pytest.mark.parametrize("snr", [35.0, 40.0, 45.0])
def test_gaussian_control_sits_exactly_on_the_budget(sentence_audio, snr):
    noisy = gaussian_control(sentence_audio, snr, seed=3)
    assert abs(snr_db(sentence_audio, noisy) - snr) < 1e-3  # float32 storage only
    delta = noisy.astype(np.float64) - sentence_audio
    assert np.linalg.norm(delta) == pytest.approx(epsilon_for_snr(sentence_audio, snr), rel=1e-4)
    np.testing.assert_array_equal(noisy, gaussian_control(sentence_audio, snr, seed=3))
    assert not np.array_equal(noisy, gaussian_control(sentence_audio, snr, seed=4))


def test_teacher_forced_loss_matches_decoding(tiny_en, sentence_audio, sentence_text):
    tokens = text_tokens(tiny_en, sentence_text)
    assert tiny_en.tokenizer.decode(tokens).strip() == sentence_text
    feats = log_mel(tiny_en, sentence_audio)
    with torch.no_grad():
        ours = float(teacher_forced_loss(tiny_en, feats, tokens))
    logits = teacher_forced_logits(tiny_en, feats, tokens)
    labels = torch.tensor(tokens + [tiny_en.eot_id])
    ref = float(torch.nn.functional.cross_entropy(logits, labels))
    assert ours == pytest.approx(ref, abs=1e-4)  # same forward pass, float32 reductions
    assert ours < 0.5  # the model knows this clean sentence


@pytest.mark.slow
def test_pgd_breaks_tiny_en_where_gaussian_noise_does_not(tiny_en, tmp_path, monkeypatch):
    from wspec.stimuli import build_stimuli

    manifest = build_stimuli("ci", progress=False)
    # attack into an empty cache: a cached result from older code must not pass this test
    monkeypatch.setenv("WSPEC_CACHE", str(tmp_path))
    kwargs = {"snrs": (35.0,), "steps": 8, "n_utts": 1, "progress": False}
    fams = ("pgd_untargeted", "pgd_targeted", "gauss_control")
    df = build_attack_stimuli(tiny_en, manifest, families=fams, **kwargs)
    assert list(df.family) == list(fams)
    params = {r.family: json.loads(r.params) for r in df.itertuples()}
    for fam, p in params.items():
        assert p["snr_measured"] >= 35.0 - 1e-3, fam  # never louder than the budget
    unt = params["pgd_untargeted"]
    assert unt["delta_norm"] <= unt["epsilon"] * (1 + 1e-5)
    assert unt["loss_end"] > unt["loss_start"] + 1.0  # the reference became unlikely
    assert unt["success"], unt["decoded"]  # WER ≥ 0.5 or CER > 0.5 after 8 steps at 35 dB
    assert not params["gauss_control"]["success"]  # same energy, random direction: harmless
    tgt = params["pgd_targeted"]
    # 8 steps rarely reach the exact phrase (success rates are measured in the book), but the
    # target must become clearly more likely: CE descends by at least a nat
    assert tgt["loss_end"] < tgt["loss_start"] - 1.0, (tgt["loss_start"], tgt["loss_end"])
    assert tgt["delta_norm"] <= tgt["epsilon"] * (1 + 1e-5)
    again = build_attack_stimuli(tiny_en, manifest, families=fams, **kwargs)
    assert list(again.sha256) == list(df.sha256)  # cached, not recomputed

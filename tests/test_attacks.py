"""Attacks: SNR budget arithmetic, the teacher-forced loss, and real PGD on tiny.en."""

from __future__ import annotations

import json
from collections import Counter

import numpy as np
import pandas as pd
import pytest
import torch

from wspec import attacks
from wspec.attacks import (
    DEFAULT_TARGET,
    AttackJob,
    attack_sources,
    book_settings,
    build_attack_stimuli,
    epsilon_for_snr,
    gaussian_control,
    pgd_l2,
    step_fraction,
    teacher_forced_loss,
    text_tokens,
)
from wspec.audio import read_audio
from wspec.decoding import greedy_decode, log_mel, teacher_forced_logits
from wspec.stimuli.build import VOICE_ORDER, design
from wspec.stimuli.degrade import snr_db

# A batched attack must equal attacking each utterance alone. Each row's encoder input has
# the same shape in both (the 30 s window), and the decoder labels share a 32-token bucket, so
# on this CPU they are bit-identical; the tolerance leaves room for a BLAS that blocks batched
# float32 matmuls differently (last bits, which PGD's normalized steps then carry along).
BATCH_RTOL = 1e-4


@pytest.fixture(scope="module")
def ci_manifest() -> pd.DataFrame:
    from wspec.stimuli import build_stimuli

    return build_stimuli("ci", progress=False)


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
    target = text_tokens(tiny_en, DEFAULT_TARGET)
    with torch.no_grad():
        ours = teacher_forced_loss(tiny_en, feats, [tokens])
        both = teacher_forced_loss(tiny_en, feats.expand(2, -1, -1), [tokens, target])
        target_alone = teacher_forced_loss(tiny_en, feats, [target])
    logits = teacher_forced_logits(tiny_en, feats, tokens)
    labels = torch.tensor(tokens + [tiny_en.eot_id])
    ref = float(torch.nn.functional.cross_entropy(logits, labels))
    assert ours.shape == (1,)
    assert float(ours[0]) == pytest.approx(ref, abs=1e-4)  # same forward pass, float32 sums
    assert float(ours[0]) < 0.5  # the model knows this clean sentence
    # padding the shorter label row changes nothing: its padded labels are ignored
    assert both.tolist() == pytest.approx([float(ours[0]), float(target_alone[0])], rel=1e-6)
    assert float(target_alone[0]) > 2.0  # the hallucination phrase is not what was said


def test_step_fraction_reaches_the_budget_like_a_random_walk():
    # near-orthogonal steps: ‖δ‖² after steps − 1 steps is ≥ (steps − 1)·α² = ε²
    for steps in (2, 3, 5, 20, 101):
        assert (steps - 1) * step_fraction(steps) ** 2 == pytest.approx(1.0)
    assert step_fraction(1) == 1.0  # one step of ε lands on the sphere from any start


def test_full_build_attacks_three_sentences_per_voice():
    # the default set's manifest order, from its design (no audio needed)
    specs = design("default")
    manifest = pd.DataFrame({"id": [s.id for s in specs], "family": [s.family for s in specs]})
    settings = book_settings("default")
    sources = attack_sources(manifest, settings["n_utts"])
    assert len(sources) >= 12
    voices = Counter(sid.split("-", 2)[2] for sid in sources["id"])
    assert set(voices) == set(VOICE_ORDER)
    assert set(voices.values()) == {len(sources) // len(VOICE_ORDER)}  # 3 each for 12
    assert settings["snrs"] == (35.0, 40.0, 45.0)
    assert book_settings("ci")["n_utts"] == 2  # CI stays fast; 2 is the fewest with an interval
    assert book_settings("user") == settings  # other sets get the full design


@pytest.mark.slow
def test_batched_pgd_equals_attacking_each_utterance_alone(tiny_en, ci_manifest):
    src = list(attack_sources(ci_manifest, 4).itertuples())
    # different lengths, budgets, directions and transcript lengths in one batch
    jobs = [
        AttackJob(
            read_audio(src[2].path), text_tokens(tiny_en, src[2].transcript), 35.0, False, 11
        ),
        AttackJob(read_audio(src[3].path), text_tokens(tiny_en, DEFAULT_TARGET), 45.0, True, 12),
    ]
    assert len({j.audio.size for j in jobs}) == 2 and len({len(j.tokens) for j in jobs}) == 2
    batched = pgd_l2(tiny_en, jobs, steps=2)
    alone = [pgd_l2(tiny_en, [job], steps=2)[0] for job in jobs]
    for job, b, a in zip(jobs, batched, alone, strict=True):
        assert b.audio.shape == job.audio.shape  # padding is cut off again
        db, da = b.audio - job.audio, a.audio - job.audio
        assert np.linalg.norm(db - da) <= BATCH_RTOL * np.linalg.norm(da)
        assert b.loss_start == pytest.approx(a.loss_start, rel=BATCH_RTOL)
        assert b.loss_end == pytest.approx(a.loss_end, rel=BATCH_RTOL)
        assert greedy_decode(tiny_en, b.audio).text == greedy_decode(tiny_en, a.audio).text
        # two steps of α = ε: on the budget's sphere, never outside it
        assert b.delta_norm <= b.epsilon * (1 + 1e-5)
        assert b.delta_norm >= b.epsilon * 10 ** (-0.5 / 20)  # within 0.5 dB
    unt, tgt = batched
    assert unt.loss_end > unt.loss_start + 0.5  # the reference became less likely
    assert tgt.loss_end < tgt.loss_start - 0.5  # the target phrase became more likely


@pytest.fixture(scope="module")
def ci_attacks(tiny_en, ci_manifest, tmp_path_factory) -> pd.DataFrame:
    """The book's ci attacks on tiny.en, into an empty cache: a result cached by older code
    must not pass these tests."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("WSPEC_CACHE", str(tmp_path_factory.mktemp("cache_a")))
        return build_attack_stimuli(tiny_en, ci_manifest, progress=False, **book_settings("ci"))


def _params(df: pd.DataFrame) -> pd.DataFrame:
    params = pd.json_normalize(df["params"].map(json.loads).tolist())
    params["family"] = df["family"].to_numpy()
    return params


@pytest.mark.slow
def test_ci_attacks_cover_every_family_at_every_budget(ci_attacks):
    settings = book_settings("ci")
    p = _params(ci_attacks)
    cells = Counter(zip(p["source"], p["snr_db"], p["family"], strict=True))
    assert len(cells) == settings["n_utts"] * len(settings["snrs"]) * 3
    assert set(cells.values()) == {1}
    assert (p["snr_measured"] >= p["snr_db"] - 1e-3).all()  # never louder than the budget
    pgd = p[p["family"] != "gauss_control"]
    # the step size brings δ to the budget's boundary, not short of it
    assert (pgd["snr_measured"] - pgd["snr_db"] < 0.5).all(), pgd["snr_measured"].tolist()
    assert (pgd["delta_norm"] <= pgd["epsilon"] * (1 + 1e-5)).all()
    unt, tgt = (p[p["family"] == f] for f in ("pgd_untargeted", "pgd_targeted"))
    assert (unt["loss_end"] > unt["loss_start"]).all()  # ascends the reference's CE
    assert (tgt["loss_end"] < tgt["loss_start"]).all()  # descends the target's CE
    assert unt[unt["snr_db"] == 35.0]["success"].any(), unt["decoded"].tolist()
    # same energy in a random direction: harmless
    assert not p[p["family"] == "gauss_control"]["success"].any()


@pytest.mark.slow
def test_attack_build_is_deterministic_and_cached(
    tiny_en, ci_manifest, ci_attacks, tmp_path, monkeypatch
):
    settings = book_settings("ci")
    # a second cold build elsewhere: the same bytes, clip by clip
    monkeypatch.setenv("WSPEC_CACHE", str(tmp_path))
    again = build_attack_stimuli(tiny_en, ci_manifest, progress=False, **settings)
    assert list(again["id"]) == list(ci_attacks["id"])
    assert list(again["sha256"]) == list(ci_attacks["sha256"])
    assert list(again["params"]) == list(ci_attacks["params"])

    # and a rerun reads the cache instead of attacking again
    def no_recompute(*_args, **_kwargs):
        raise AssertionError("a cached attack was recomputed")

    monkeypatch.setattr(attacks, "pgd_l2", no_recompute)
    monkeypatch.setattr(attacks, "gaussian_control", no_recompute)
    reread = build_attack_stimuli(tiny_en, ci_manifest, progress=False, **settings)
    assert list(reread["sha256"]) == list(again["sha256"])

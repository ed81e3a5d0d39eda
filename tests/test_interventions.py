"""run_with_cache / run_with_hooks on the real tiny.en weights and real synthesized speech."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pandas as pd
import pytest
import torch

from wspec.causal import (
    AblationSettings,
    ablation_clips,
    ablation_summary,
    edit_change,
    random_head_sets,
    run_ablation,
    targeted_heads,
)
from wspec.decoding import greedy_decode, log_mel
from wspec.errors import WspecError
from wspec.interventions import (
    HeadPatch,
    ablation,
    all_heads,
    head_means,
    head_outputs,
    patched,
    run_with_cache,
    run_with_hooks,
)

CAP = 24  # tokens: the test sentence needs ~17, so every decode here ends naturally


@pytest.fixture(scope="module")
def other_audio():
    from wspec.stimuli.tts import synthesize

    return synthesize("Please put the green folder on my desk before noon.", "piper_joe")


def _prompt_logits(loaded, audio, patches=()) -> torch.Tensor:
    """Next-token logits after the start-of-transcript prompt, in one forward pass."""
    ids = torch.tensor([loaded.sot_sequence])
    with torch.no_grad(), patched(loaded, patches):
        return loaded.model(input_features=log_mel(loaded, audio), decoder_input_ids=ids).logits[
            0, -1
        ]


def test_no_patch_reproduces_the_plain_decode(tiny_en, sentence_audio) -> None:
    plain = greedy_decode(tiny_en, sentence_audio, max_new_tokens=CAP)
    hooked = run_with_hooks(tiny_en, sentence_audio, [], max_new_tokens=CAP)
    assert "lazy dog" in plain.text.lower()  # real weights, real speech
    assert hooked.tokens == plain.tokens
    # Same kernels on the same inputs: bitwise equal on CPU; 1e-6 allows a reordered sum.
    np.testing.assert_allclose(hooked.token_logprobs, plain.token_logprobs, atol=1e-6)


def test_run_with_cache_returns_the_decode_and_its_sites(tiny_en, sentence_audio) -> None:
    decoded, captured = run_with_cache(
        tiny_en, sentence_audio, ["decoder.1.cross_attn"], max_new_tokens=CAP
    )
    assert decoded.tokens == greedy_decode(tiny_en, sentence_audio, max_new_tokens=CAP).tokens
    assert captured.matrices["decoder.1.cross_attn"].shape == (len(decoded.tokens) + 1, 384)


def _assert_deaf(loaded, audio_a, audio_b, patches) -> None:
    """Two different clips give the same next-token logits under `patches` (float32
    round-off only: rtol 1e-5, atol 1e-4 on logits of size ~10)."""
    torch.testing.assert_close(
        _prompt_logits(loaded, audio_a, patches),
        _prompt_logits(loaded, audio_b, patches),
        rtol=1e-5,
        atol=1e-4,
    )


def test_ablating_every_cross_attention_head_makes_the_decode_deaf(
    tiny_en, sentence_audio, other_audio
) -> None:
    deaf = ablation(all_heads(tiny_en))
    a = run_with_hooks(tiny_en, sentence_audio, deaf, max_new_tokens=CAP)
    b = run_with_hooks(tiny_en, other_audio, deaf, max_new_tokens=CAP)
    assert greedy_decode(tiny_en, other_audio, max_new_tokens=CAP).text != a.text
    # Cross-attention is the decoder's only path to the audio: without it, two different
    # clips must give the same tokens and the same logits (float32 round-off only).
    assert a.tokens == b.tokens
    _assert_deaf(tiny_en, sentence_audio, other_audio, deaf)


def test_ablating_one_head_moves_the_logits(tiny_en, sentence_audio) -> None:
    plain = _prompt_logits(tiny_en, sentence_audio)
    one = _prompt_logits(tiny_en, sentence_audio, ablation([(0, 0)]))
    # Far above float32 round-off (~1e-5 on logits of size ~10): the head matters.
    assert (one - plain).abs().max() > 1e-3


def test_mean_ablation_with_the_heads_own_means(tiny_en, sentence_audio, other_audio) -> None:
    decoded, outputs = head_outputs(tiny_en, sentence_audio, max_new_tokens=CAP)
    layers, heads, rows, width = outputs.shape
    assert (layers, heads, rows, width) == (4, 6, len(decoded.tokens) + 1, 64)
    # The recorded rows are what out_proj sees: projecting them gives the captured site.
    _, captured = run_with_cache(
        tiny_en, sentence_audio, ["decoder.2.cross_attn"], max_new_tokens=CAP
    )
    out_proj = tiny_en.model.model.decoder.layers[2].encoder_attn.out_proj
    joined = outputs[2].transpose(0, 1).reshape(rows, heads * width)
    torch.testing.assert_close(
        out_proj(joined), captured.matrices["decoder.2.cross_attn"], rtol=1e-4, atol=1e-4
    )
    means = head_means([outputs])
    # Mean-ablating all heads also cuts the audio path (a constant replaces each head).
    _assert_deaf(tiny_en, sentence_audio, other_audio, ablation(all_heads(tiny_en), "mean", means))


def test_bad_patches_fail_with_a_clear_error(tiny_en, sentence_audio) -> None:
    with pytest.raises(WspecError, match="no cross-attention head"):
        run_with_hooks(tiny_en, sentence_audio, [HeadPatch(4, 0)])
    with pytest.raises(WspecError, match="unknown ablation"):
        run_with_hooks(tiny_en, sentence_audio, [HeadPatch(0, 0, "noise")])
    with pytest.raises(WspecError, match="head_means"):
        run_with_hooks(tiny_en, sentence_audio, [HeadPatch(0, 0, "mean")])


def test_patches_are_removed_after_an_exception(tiny_en, sentence_audio) -> None:
    before = _prompt_logits(tiny_en, sentence_audio)
    with pytest.raises(RuntimeError, match="boom"), patched(tiny_en, ablation([(0, 0)])):
        raise RuntimeError("boom")
    torch.testing.assert_close(_prompt_logits(tiny_en, sentence_audio), before)


def test_head_choice_and_edit_change() -> None:
    change = np.array([[1.0, -5.0, np.nan], [4.0, 0.5, -2.0]])
    assert targeted_heads(change, 2) == [(0, 1), (1, 0)]
    heads = [(i, h) for i in range(2) for h in range(3)]
    draws = random_head_sets(heads, [(0, 1), (1, 0)], 2, 5, seed=1)
    assert draws == random_head_sets(heads, [(0, 1), (1, 0)], 2, 5, seed=1)  # seeded
    assert all((0, 1) not in d and (1, 0) not in d and len(set(d)) == 2 for d in draws)
    assert edit_change([1, 2, 3, 4], [1, 2, 3, 4]) == 0.0
    assert edit_change([1, 2, 3, 4], [1, 9, 3]) == pytest.approx(2 / 4)  # 1 sub + 1 del
    assert edit_change([], [5, 6]) == 1.0


def test_ablation_clips_groups_dedupes_and_needs_a_path() -> None:
    ids = ["c1", "c2", "n1", "n2", "s1", "h1", "atk"]
    labels = pd.DataFrame(
        {
            "model": "m",
            "stimulus_id": ids,
            "family": [
                "clean",
                "clean",
                "nonspeech",
                "nonspeech",
                "noisy_snr",
                "hell",
                "noisy_snr",
            ],
            "hallucinated": [False, False, True, True, False, True, False],
        }
    )
    decodes = pd.DataFrame(
        {
            "model": "m",
            "stimulus_id": ids,
            "cluster": ["a", "b", "k", "k", "a", "a", "b"],
            "input_key": ["1", "2", "3", "3", "4", "5", "6"],  # n1 and n2 are the same input
        }
    )
    stimuli = pd.DataFrame({"id": ids[:-1], "path": [f"/{i}.wav" for i in ids[:-1]]})
    clips = ablation_clips(labels, decodes, stimuli, "m", per_group=5)
    # hell is compared only in the paper protocol (crossmodel.stressed_group); the attack
    # clip has no path in the stimulus set; the duplicated input counts once.
    assert clips.groupby("group").size().to_dict() == {"clean": 2, "hallucinated": 1, "survived": 1}
    assert set(clips["stimulus_id"]) == {"c1", "c2", "n1", "s1"}
    assert len(ablation_clips(labels, decodes, stimuli, "m", per_group=1)) == 3


@pytest.mark.slow
def test_run_ablation_on_real_clips_is_bounded_and_cached(
    tiny_en, sentence_audio, other_audio, tmp_path, monkeypatch
) -> None:
    from wspec.audio import write_audio

    monkeypatch.setenv("WSPEC_CACHE", str(tmp_path / "cache"))
    rng = np.random.default_rng(0)
    audio = {
        "clean-a": sentence_audio,
        "clean-b": other_audio,
        "noise": 0.05 * rng.standard_normal(16000 * 3).astype(np.float32),
        "speech": sentence_audio
        + 0.01 * rng.standard_normal(len(sentence_audio)).astype(np.float32),
    }
    for name, clip in audio.items():
        write_audio(tmp_path / f"{name}.wav", clip)
    clips = pd.DataFrame(
        {
            "stimulus_id": list(audio),
            "group": ["clean", "clean", "hallucinated", "survived"],
            "cluster": ["s0", "s1", "noise", "s0"],
            "path": [str(tmp_path / f"{n}.wav") for n in audio],
        }
    )
    settings = AblationSettings(k=2, n_random=2, per_group=2, max_new_tokens=8)
    changes = run_ablation(tiny_en, clips, settings)
    assert len(changes) == 2 * (1 + settings.n_random)  # two stressed clips × head sets
    assert changes["change"].between(0.0, 1.0).all()
    heads = {row.head_set: json.loads(row.heads) for row in changes.itertuples()}
    targeted = {tuple(h) for h in heads.pop("targeted")}
    assert len(targeted) == settings.k and len(heads) == settings.n_random
    assert all(not targeted & {tuple(h) for h in drawn} for drawn in heads.values())
    summary = ablation_summary(changes, n_boot=200)
    assert list(summary["group"]) == ["hallucinated", "survived"]
    assert np.isnan(summary["ci_low"]).all()  # one clip per group: no interval
    # Mean ablation (the book's sensitivity row): the same head sets, its own cache entry,
    # each head replaced by its mean over the clean decodes.
    mean = run_ablation(tiny_en, clips, dataclasses.replace(settings, mode="mean"))
    assert mean["heads"].tolist() == changes["heads"].tolist()
    assert mean["change"].between(0.0, 1.0).all()
    # The second call reads the cache instead of decoding again.
    monkeypatch.setattr("wspec.causal.head_outputs", lambda *a, **k: pytest.fail("recomputed"))
    pd.testing.assert_frame_equal(run_ablation(tiny_en, clips, settings), changes)

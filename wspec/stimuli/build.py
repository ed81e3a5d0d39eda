"""The design of the stress set and the build that writes it to the cache.

A set is a list of `Spec`s (what to make, from which parameters and seed); `build_stimuli`
turns each into a float32 WAV under `cache_dir("stimuli", set_name)/audio/<id>.wav`, skips
files that already exist, and writes the manifest. Ids are derived from the parameters
and seeds from the id (crc32), so the same design gives the same bytes on every run.

Sets:
  "default": 404 clips: 72 clean utterances (4 voices × 18), 16 long (four sentences,
             4 per voice) and 12 short (three phrases × 4 voices) utterances, 44 non-speech
             clips, 60 speech-in-noise, 16 trailing-silence, 12 repeated-syllable and 12
             reversed clips, and 160 "Hell" clips (10 conditions of each long utterance).
  "ci":      42 clips (12 clean, 2 long, 4 short, 8 non-speech, 10 degraded, 6 Hell) with
             the same ids as in "default", for tests and the book's reduced mode.
"""

from __future__ import annotations

import hashlib
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.io import wavfile

from wspec.audio import SAMPLE_RATE, read_audio, write_audio
from wspec.errors import WspecError
from wspec.paths import atomic_write_bytes
from wspec.progress import track
from wspec.stimuli import degrade, hell, nonspeech
from wspec.stimuli.manifest import MANIFEST_NAME, params_json, save_manifest, set_dir, to_frame
from wspec.stimuli.sentences import SENTENCES
from wspec.stimuli.tts import espeak_talker, synthesize

VOICE_ORDER: tuple[str, ...] = ("piper_joe", "hibari_heart", "espeak_us", "espeak_gb_f")
SNRS_DB: tuple[float, ...] = (20.0, 10.0, 5.0, 0.0, -5.0)
NONSPEECH_LENGTHS_S: tuple[float, ...] = (1.0, 5.0, 10.0, 29.0, 31.0)
SETS: tuple[str, ...] = ("default", "ci")
LONG_GROUPS = 16  # long utterances read sentences 0–63, four each
GROUP_SIZE = 4  # sentences per long utterance: 14–19 s with our voices
SHORT_PHRASES: tuple[str, ...] = ("Yes.", "Thank you.", "Good morning.")
TEMPOS: tuple[float, ...] = (1.5, 2.5, 3.5, 0.8)
TALKERS: tuple[int, ...] = (2, 4, 6)
# One distinct espeak-ng voice per interferer (up to 5), none of them a clean voice.
INTERFERER_VOICES: tuple[str, ...] = (
    "en-us+m3",
    "en-gb+f2",
    "en-us+f4",
    "en-gb-scotland+m5",
    "en+m7",
)

AudioOf = Callable[[str], np.ndarray]


@dataclass(frozen=True)
class Spec:
    """One stimulus to make: `make(audio_of)` returns 16 kHz float32 samples; `audio_of(id)`
    gives an already-built stimulus of the same set (for derived families)."""

    id: str
    family: str
    params: dict
    transcript: str
    make: Callable[[AudioOf], np.ndarray] = field(compare=False)
    source_id: str = ""

    @property
    def seed(self) -> int:
        return zlib.crc32(self.id.encode())


def _num(x: float) -> str:
    """Id-safe number: 10 → '10', -5 → 'm5', 0.5 → '0p5'."""
    s = f"{x:g}".replace("-", "m").replace(".", "p")
    return s


def clean_id(index: int) -> str:
    return f"clean-{index:02d}-{VOICE_ORDER[index % len(VOICE_ORDER)]}"


def clean_specs(indices: range) -> list[Spec]:
    """Sentence i read by voice i mod 4 (18 sentences per voice in the full set)."""
    specs = []
    for i in indices:
        voice = VOICE_ORDER[i % len(VOICE_ORDER)]
        sid = clean_id(i)
        text = SENTENCES[i]
        seed = zlib.crc32(sid.encode())
        specs.append(
            Spec(
                sid,
                "clean",
                {"voice": voice, "sentence": i},
                text,
                lambda _a, t=text, v=voice, s=seed: synthesize(t, v, seed=s),
            )
        )
    return specs


def long_id(group: int) -> str:
    return f"long-{group:02d}-{VOICE_ORDER[group % len(VOICE_ORDER)]}"


def _group(group: int) -> list[int]:
    """Sentence indices of group g: the GROUP_SIZE consecutive sentences from GROUP_SIZE·g."""
    return [GROUP_SIZE * group + k for k in range(GROUP_SIZE)]


def _text(sentences: list[int]) -> str:
    return " ".join(SENTENCES[i] for i in sentences)


def long_clean_specs(set_name: str) -> list[Spec]:
    """Group g read by voice g mod 4 in ONE synthesis call (4 groups per voice in the full set).

    One call gives one continuous utterance of four sentences (about 14–19 s with our
    voices; three sentences gave only 11–14 s, short of the paper's 15–25 s): the decoder
    must keep its place over many tokens, and the Hell conditions start from it.
    """
    specs = []
    for g in range(2 if set_name == "ci" else LONG_GROUPS):
        voice = VOICE_ORDER[g % len(VOICE_ORDER)]
        sid = long_id(g)
        text = _text(_group(g))
        seed = zlib.crc32(sid.encode())
        specs.append(
            Spec(
                sid,
                "long_clean",
                {"voice": voice, "sentences": _group(g)},
                text,
                lambda _a, t=text, v=voice, s=seed: synthesize(t, v, seed=s),
            )
        )
    return specs


def short_clean_specs(set_name: str) -> list[Spec]:
    """One- or two-word phrases read by every voice ("Thank you." only in the ci set).

    The forced-decoding sensitivity analysis needs clean speech whose natural decode is
    shorter than the decode budget: these are its control for the forced rows, where any
    token after the natural end is made up by the decoder, not heard.
    """
    specs = []
    for phrase in ("Thank you.",) if set_name == "ci" else SHORT_PHRASES:
        slug = phrase.lower().rstrip(".").replace(" ", "-")
        for voice in VOICE_ORDER:
            sid = f"short-{slug}-{voice}"
            seed = zlib.crc32(sid.encode())
            specs.append(
                Spec(
                    sid,
                    "short_clean",
                    {"voice": voice, "phrase": phrase},
                    phrase,
                    lambda _a, t=phrase, v=voice, s=seed: synthesize(t, v, seed=s),
                )
            )
    return specs


def _ns(kind: str, seconds: float, **params: float | str) -> Spec:
    tag = "-".join(f"{_num(v) if isinstance(v, float | int) else v}" for v in params.values())
    sid = f"nonspeech-{kind}{'-' + tag if tag else ''}-{_num(seconds)}s"
    seed = zlib.crc32(sid.encode())
    return Spec(
        sid,
        "nonspeech",
        {"kind": kind, "seconds": seconds, **params},
        "",
        lambda _a: nonspeech.generate(kind, seconds, seed, **params),
    )


def nonspeech_specs(set_name: str) -> list[Spec]:
    """Core kinds at every length straddling the 30 s window; the rest at 10 s (and a few
    at 5/29 s) over their level or frequency range."""
    if set_name == "ci":
        return [
            _ns("silence", 10.0),
            _ns("silence", 31.0),
            _ns("noise", 10.0, color="white", level_dbfs=-30.0),
            _ns("noise", 10.0, color="pink", level_dbfs=-30.0),
            _ns("hiss", 5.0, level_dbfs=-45.0),
            _ns("hum", 10.0, mains_hz=50.0, level_dbfs=-30.0),
            _ns("tone", 5.0, freq_hz=1000.0, level_dbfs=-20.0),
            _ns("chords", 10.0, level_dbfs=-20.0),
        ]
    specs = []
    for sec in NONSPEECH_LENGTHS_S:
        specs += [
            _ns("silence", sec),
            _ns("noise", sec, color="white", level_dbfs=-30.0),
            _ns("hum", sec, mains_hz=50.0, level_dbfs=-30.0),
            _ns("chords", sec, level_dbfs=-20.0),
        ]
    specs += [_ns("dither", s) for s in (10.0, 29.0)]
    specs += [_ns("hiss", 10.0, level_dbfs=lv) for lv in (-60.0, -45.0)]
    specs += [_ns("hiss", 29.0, level_dbfs=-45.0), _ns("hiss", 5.0, level_dbfs=-45.0)]
    specs += [_ns("hum", 10.0, mains_hz=60.0, level_dbfs=-30.0)]
    specs += [_ns("noise", 10.0, color="white", level_dbfs=lv) for lv in (-40.0, -20.0)]
    specs += [
        _ns("noise", 10.0, color=c, level_dbfs=lv)
        for c in ("pink", "brown")
        for lv in (-40.0, -30.0, -20.0)
    ]
    specs += [_ns("noise", s, color="pink", level_dbfs=-30.0) for s in (5.0, 29.0)]
    specs += [_ns("tone", 10.0, freq_hz=f, level_dbfs=-20.0) for f in (440.0, 1000.0)]
    specs += [_ns("tone", 5.0, freq_hz=1000.0, level_dbfs=-20.0)]
    specs += [_ns("chirp", s, f0_hz=100.0, f1_hz=6000.0, level_dbfs=-20.0) for s in (5.0, 10.0)]
    specs += [_ns("clicks", 10.0, rate_hz=r, peak=0.5) for r in (2.0, 10.0)]
    return specs


def _derived(family: str, src: str, tag: str, params: dict, transcript: str, fn) -> Spec:
    # The source id without its family prefix: clean-00-piper_joe → noisy_snr-00-piper_joe-…
    sid = f"{family}-{src.split('-', 1)[1]}-{tag}"
    seed = zlib.crc32(sid.encode())
    return Spec(
        sid,
        family,
        {"source": src, **params},
        transcript,
        lambda audio_of: fn(audio_of(src), seed),
        source_id=src,
    )


SYLLABLES: tuple[tuple[str, str], ...] = (
    ("go", "piper_joe"),
    ("no", "hibari_heart"),
    ("me", "espeak_us"),
)


def _syllable_spec(word: str, voice: str, rate: float, seconds: float = 6.0) -> Spec:
    count = int(round(seconds * rate))
    sid = f"repeated_syllables-{word}-{voice}-{_num(rate)}hz"
    return Spec(
        sid,
        "repeated_syllables",
        {"syllable": word, "voice": voice, "rate_hz": rate, "count": count},
        " ".join([word] * count),
        lambda _a: degrade.repeat_syllable(synthesize(f"{word}.", voice, seed=0), rate, count),
    )


def degraded_specs(set_name: str) -> list[Spec]:
    """Degradations of the first clean utterances (3 per voice in the full set)."""
    ci = set_name == "ci"
    sources = [clean_id(i) for i in range(2 if ci else 12)]
    snrs = (10.0, -5.0) if ci else SNRS_DB
    totals = (28.0,) if ci else (15.0, 28.0)
    specs = []
    for k, src in enumerate(sources):
        color = "white" if k % 2 == 0 else "pink"
        for snr in snrs:
            specs.append(
                _derived(
                    "noisy_snr",
                    src,
                    f"{color}-{_num(snr)}db",
                    {"snr_db": snr, "color": color},
                    "",
                    lambda x, seed, snr=snr, color=color: degrade.noisy(x, snr, color, seed),
                )
            )
    for src in sources[: 2 if ci else 8]:
        for total in totals:
            specs.append(
                _derived(
                    "trailing_silence",
                    src,
                    f"{_num(total)}s",
                    {"total_s": total},
                    "",
                    lambda x, _s, total=total: degrade.trailing_silence(x, total),
                )
            )
    for src in sources:
        specs.append(
            _derived("reversed", src, "rev", {}, "", lambda x, _s: degrade.reversed_speech(x))
        )
    rates = (3.0, 9.0) if ci else (3.0, 5.0, 7.0, 9.0)
    for j, (word, voice) in enumerate(SYLLABLES[: 2 if ci else 3]):
        chosen = (rates[j],) if ci else rates
        specs += [_syllable_spec(word, voice, r) for r in chosen]
    return specs


def _hell(src: str, tag: str, condition: str, level: str, params: dict, fn) -> Spec:
    """A Hell clip; `condition` and `level` let the statistics stratify the family."""
    return _derived("hell", src, tag, {"condition": condition, "level": level, **params}, "", fn)


def _interferers(group: int, n: int) -> list[tuple[str, list[int]]]:
    """(espeak voice, sentence indices) of the n interferers of group g.

    Interferer k reads the text of long utterance (g + 1 + k) mod LONG_GROUPS in an espeak
    variant voice, so it never speaks the target's words (n ≤ 5 < LONG_GROUPS) and the n
    interferers of one clip read different texts.
    """
    return [(INTERFERER_VOICES[k], _group((group + 1 + k) % LONG_GROUPS)) for k in range(n)]


def _talker_mix(group: int, talkers: int) -> tuple[dict, Callable[[np.ndarray, int], np.ndarray]]:
    """Parameters and mixing function for `talkers` talkers in total (target included)."""
    chosen = _interferers(group, talkers - 1)
    params = {
        "talkers": talkers,
        "interferers": [voice for voice, _ in chosen],
        "interferer_sentences": [sentences for _, sentences in chosen],
    }

    def mix(x: np.ndarray, _seed: int) -> np.ndarray:
        return hell.mix_talkers(x, [espeak_talker(_text(s), voice) for voice, s in chosen])

    return params, mix


def _hell_of(group: int, ci: bool) -> list[Spec]:
    """The Hell conditions of long utterance g (tempo 3.5, 4 talkers and noise in the ci set)."""
    src = long_id(group)
    color = "white" if group % 2 == 0 else "pink"
    noise = {"snr_db": 0.0, "color": color}

    def add_noise(x: np.ndarray, seed: int) -> np.ndarray:
        return degrade.noisy(x, 0.0, color, seed)

    def stretch(f: float) -> Callable[[np.ndarray, int], np.ndarray]:
        return lambda x, _seed: hell.time_stretch(x, f)

    specs = [
        _hell(src, f"tempo{_num(f)}", "tempo", f"{f:g}", {"tempo": f}, stretch(f))
        for f in ((3.5,) if ci else TEMPOS)
    ]
    for n in (4,) if ci else TALKERS:
        params, mix = _talker_mix(group, n)
        specs.append(_hell(src, f"talkers{n}", "talkers", str(n), params, mix))
    specs.append(_hell(src, f"noise0db-{color}", "noise", f"0db-{color}", noise, add_noise))
    if ci:
        return specs
    pair, pair_mix = _talker_mix(group, 2)
    return specs + [
        _hell(
            src,
            "tempo2p5-noise0db",
            "tempo+noise",
            f"2.5+0db-{color}",
            {"tempo": 2.5, **noise},
            lambda x, seed: add_noise(hell.time_stretch(x, 2.5), seed),
        ),
        _hell(
            src,
            "talkers2-tempo1p5",
            "talkers+tempo",
            "2+1.5",
            {**pair, "tempo": 1.5},
            lambda x, seed: hell.time_stretch(pair_mix(x, seed), 1.5),
        ),
    ]


def hell_specs(set_name: str) -> list[Spec]:
    """The paper's "Hell" stress condition, built from our own long utterances.

    Per long utterance: time stretch (tempo 1.5, 2.5, 3.5 and 0.8: a slow-down beyond
    1.25× would push the paper's 25 s utterances past Whisper's 30 s window; ours stay
    under 18 s), 2, 4 and 6 overlapping talkers, 0 dB noise (white for even g, pink for
    odd g), and two combinations: tempo 2.5 then 0 dB noise, 2 talkers then tempo 1.5.
    """
    ci = set_name == "ci"
    return [spec for g in range(2 if ci else LONG_GROUPS) for spec in _hell_of(g, ci)]


def design(set_name: str) -> list[Spec]:
    """Every stimulus of a set, speech first (derived clips read their sources back)."""
    if set_name not in SETS:
        raise WspecError(f"unknown stimulus set {set_name!r}; choose one of {', '.join(SETS)}.")
    clean = clean_specs(range(12) if set_name == "ci" else range(len(SENTENCES)))
    speech = clean + long_clean_specs(set_name) + short_clean_specs(set_name)
    specs = speech + nonspeech_specs(set_name) + degraded_specs(set_name) + hell_specs(set_name)
    # Derived families keep the source's transcript (speech in noise, trailing silence,
    # Hell); reversed speech has no words, so its transcript stays empty.
    text = {s.id: s.transcript for s in speech}
    keep = {"noisy_snr", "trailing_silence", "hell"}
    return [
        Spec(s.id, s.family, s.params, text[s.source_id], s.make, s.source_id)
        if s.family in keep
        else s
        for s in specs
    ]


def _read_exact(path: Path) -> np.ndarray:
    _, audio = wavfile.read(path)
    return np.asarray(audio, dtype=np.float32)


def _recipes(specs: list[Spec]) -> dict[str, str]:
    """Everything that decides a stimulus's samples, as canonical JSON, per id.

    A derived stimulus's recipe includes its source's, so editing a sentence also remakes
    the noisy, reversed and padded versions made from it.
    """
    by_id = {s.id: s for s in specs}
    recipes: dict[str, str] = {}

    def recipe(spec: Spec) -> str:
        if spec.id not in recipes:
            source = by_id.get(spec.source_id)
            recipes[spec.id] = params_json(
                {
                    "family": spec.family,
                    "params": spec.params,
                    "seed": spec.seed,
                    "transcript": spec.transcript,
                    "source": recipe(source) if source is not None else spec.source_id,
                }
            )
        return recipes[spec.id]

    for spec in specs:
        recipe(spec)
    return recipes


def build_specs(
    specs: list[Spec], root: Path, *, progress: bool = True, desc: str = "stimuli"
) -> pd.DataFrame:
    """Make each spec's WAV under root/audio and return the manifest.

    A WAV is reused only when the recipe stored beside it (`<id>.recipe.json`) equals the
    spec's: a rebuild after editing a sentence or a parameter remakes exactly what changed.
    """
    audio_dir = root / "audio"
    audio_dir.mkdir(parents=True, exist_ok=True)
    path_of = {s.id: audio_dir / f"{s.id}.wav" for s in specs}
    if len(path_of) != len(specs):
        raise WspecError("stimulus ids are not unique; this is a bug in the set design.")
    recipes = _recipes(specs)
    rows = []
    for spec in track(specs, desc, unit="clips", enabled=progress):
        path = path_of[spec.id]
        recipe_path = path.with_suffix(".recipe.json")
        fresh = path.is_file() and recipe_path.is_file()
        if fresh and recipe_path.read_text() == recipes[spec.id]:
            data = path.read_bytes()
            n = _read_exact(path).size
        else:
            audio = spec.make(lambda sid: _read_exact(path_of[sid]))
            data = write_audio(path, audio)
            atomic_write_bytes(recipe_path, recipes[spec.id].encode())
            n = audio.size
        rows.append(
            {
                "id": spec.id,
                "family": spec.family,
                "params": params_json(spec.params),
                "seed": spec.seed,
                "duration_s": n / SAMPLE_RATE,
                "transcript": spec.transcript,
                "source_id": spec.source_id,
                "sha256": hashlib.sha256(data).hexdigest(),
                "path": str(path),
            }
        )
    return to_frame(rows)


def build_stimuli(
    set_name: str = "default", cache: Path | None = None, progress: bool = True
) -> pd.DataFrame:
    """Build (or complete) a stimulus set and return its manifest.

    `cache` overrides the set's folder (default `cache_dir("stimuli", set_name)`).
    """
    specs = design(set_name)
    root = Path(cache) if cache is not None else set_dir(set_name)
    df = build_specs(specs, root, progress=progress, desc=f"stimuli[{set_name}]")
    save_manifest(df, root / MANIFEST_NAME)
    return df


def add_user_folder(folder: Path, set_name: str = "user", progress: bool = True) -> pd.DataFrame:
    """Make a set from a folder of `<name>.wav` (or any soundfile format) + `<name>.txt`.

    Each file is read with `read_audio` (16 kHz mono, ≤ 30 s), stored as float32 WAV, and
    gets family "user" with the text file's content as transcript (e.g. LibriSpeech); the
    statistics count "user" clips as clean speech. The built-in set names are refused, so a
    user folder can never replace the book's stimuli.
    """
    if set_name in SETS:
        raise WspecError(
            f"{set_name!r} is a built-in stimulus set; give your folder its own name, "
            "e.g. --set user."
        )
    folder = Path(folder)
    audio_files = sorted(
        p for p in folder.iterdir() if p.suffix.lower() in {".wav", ".flac", ".ogg"}
    )
    if not audio_files:
        raise WspecError(f"no .wav/.flac/.ogg files in {folder}; put audio + .txt pairs there.")
    specs = []
    for p in audio_files:
        txt = p.with_suffix(".txt")
        if not txt.is_file():
            raise WspecError(f"{p.name} has no transcript; add {txt.name} beside it.")
        specs.append(
            Spec(
                f"user-{p.stem}",
                "user",
                {"file": p.name, "sha256": hashlib.sha256(p.read_bytes()).hexdigest()},
                " ".join(txt.read_text(encoding="utf-8").split()),
                lambda _a, p=p: read_audio(p),
            )
        )
    root = set_dir(set_name)
    df = build_specs(specs, root, progress=progress, desc=f"stimuli[{set_name}]")
    save_manifest(df, root / MANIFEST_NAME)
    return df

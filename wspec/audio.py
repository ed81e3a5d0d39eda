"""Reading and writing audio the way Whisper sees it: 16 kHz, mono, float32.

Whisper's front end assumes 16 kHz mono and looks at exactly 30 s. Everything that
enters wspec (our synthesized stimuli, a user's own files) goes through `read_audio`,
so a wrong rate, a stereo file or a broken file is caught once, here, with one message.

Policy for long files: Whisper's encoder sees a single 30 s window, and this project
measures that window. `read_audio` therefore refuses files longer than 30 s by default
and says how to split them (e.g. `sox long.wav part.wav trim 0 30 : newfile : restart`);
`allow_long=True` returns the whole signal, and the log-mel front end then keeps only
the first 30 s, as Whisper's feature extractor does (used for the 31 s stimuli that
straddle the window on purpose).
"""

from __future__ import annotations

import io
import os
from math import gcd
from pathlib import Path

import numpy as np
import soundfile as sf
from scipy.io import wavfile
from scipy.signal import resample_poly

from wspec.errors import WspecError
from wspec.paths import atomic_write_bytes

SAMPLE_RATE = 16_000
WINDOW_SECONDS = 30.0


def to_16k_mono(audio: np.ndarray, sample_rate: int) -> np.ndarray:
    """Downmix (mean over channels) and resample with a polyphase filter to 16 kHz float32.

    `audio` is (samples,) or (samples, channels). resample_poly is exact rational
    resampling with a Kaiser-windowed FIR, deterministic and fast for 22.05/24/44.1/48 kHz.
    """
    audio = np.asarray(audio, dtype=np.float64)
    if audio.ndim == 2:
        audio = audio.mean(axis=1)
    if sample_rate != SAMPLE_RATE:
        g = gcd(int(sample_rate), SAMPLE_RATE)
        audio = resample_poly(audio, SAMPLE_RATE // g, int(sample_rate) // g)
    return audio.astype(np.float32)


def check_audio(audio: np.ndarray, source: str = "audio") -> np.ndarray:
    """Raise WspecError for empty or non-finite audio; return it unchanged otherwise."""
    if audio.size == 0:
        raise WspecError(f"{source} contains no samples; give a file with some audio in it.")
    if not np.all(np.isfinite(audio)):
        raise WspecError(
            f"{source} contains NaN or infinite samples; re-export it as ordinary PCM/float audio."
        )
    return audio


def read_audio(path: str | os.PathLike[str], *, allow_long: bool = False) -> np.ndarray:
    """Read any soundfile-readable file as 16 kHz mono float32.

    Empty, NaN/inf or unreadable files raise one WspecError. Files longer than 30 s
    raise too unless `allow_long` (see the module docstring for why).
    """
    path = Path(path)
    if not path.is_file():
        raise WspecError(f"audio file {path} does not exist; check the path.")
    try:
        data, rate = sf.read(str(path), dtype="float64", always_2d=False)
    except (sf.LibsndfileError, RuntimeError, TypeError, ValueError) as err:
        raise WspecError(
            f"cannot read {path} as audio ({err}); give a WAV/FLAC/OGG file "
            "(convert others with e.g. `sox in.mp3 out.wav`)."
        ) from err
    check_audio(np.asarray(data), str(path))
    audio = check_audio(to_16k_mono(data, rate), str(path))
    seconds = audio.size / SAMPLE_RATE
    if seconds > WINDOW_SECONDS and not allow_long:
        raise WspecError(
            f"{path} is {seconds:.1f} s long, but Whisper sees one 30 s window and wspec "
            "analyses exactly that window; split it first, e.g. "
            f"`sox {path.name} part.wav trim 0 30 : newfile : restart`."
        )
    return audio


def wav_bytes(audio: np.ndarray) -> bytes:
    """Encode 16 kHz mono float32 as a WAV file (IEEE float).

    scipy's writer is used instead of libsndfile because libsndfile adds a PEAK chunk
    with a timestamp to float WAVs, which would make identical audio hash differently.
    """
    buf = io.BytesIO()
    wavfile.write(buf, SAMPLE_RATE, np.ascontiguousarray(audio, dtype=np.float32))
    return buf.getvalue()


def write_audio(path: str | os.PathLike[str], audio: np.ndarray) -> bytes:
    """Atomically write `audio` as a float32 WAV; return the bytes written (for hashing)."""
    data = wav_bytes(check_audio(np.asarray(audio, dtype=np.float32), str(path)))
    atomic_write_bytes(path, data)
    return data

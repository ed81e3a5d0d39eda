"""wspec: reproduce, test and extend the spectral theory of Whisper hallucinations."""

__version__ = "0.1.0"

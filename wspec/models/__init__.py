"""Resolve and load any Whisper: bundled weights, hub ids, local folders, untrained controls."""

from wspec.models.loaded import LoadedWhisper
from wspec.models.resolve import ModelInfo, available, load

__all__ = ["LoadedWhisper", "ModelInfo", "available", "load"]

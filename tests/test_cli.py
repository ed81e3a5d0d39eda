"""The `wspec` command line as a user meets it: help everywhere, `python -m wspec`, a stimulus
build that reports the same manifest hash twice, transcription of a real synthesized file,
and one clear error for bad input."""

from __future__ import annotations

import re
import subprocess
import sys

import numpy as np
import pytest
import soundfile

from wspec.audio import write_audio
from wspec.cli import build_parser, main

COMMANDS = (
    "assignments",
    "book",
    "detect",
    "jacobian",
    "models",
    "run",
    "stimuli",
    "table",
    "transcribe",
)


def _help(argv: list[str], capsys) -> str:
    with pytest.raises(SystemExit) as exit_info:
        main([*argv, "--help"])
    assert exit_info.value.code == 0
    return capsys.readouterr().out


def test_every_command_and_verb_has_help(capsys):
    top = _help([], capsys)
    for command in COMMANDS:
        assert command in top
        assert f"usage: wspec {command}" in _help([command], capsys)
    for verb in ("build", "list", "attack"):
        assert f"usage: wspec stimuli {verb}" in _help(["stimuli", verb], capsys)
    for verb in ("export", "grade"):
        assert f"usage: wspec assignments {verb}" in _help(["assignments", verb], capsys)


def test_python_dash_m_runs_the_same_cli():
    done = subprocess.run(
        [sys.executable, "-m", "wspec", "--help"], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert all(command in done.stdout for command in COMMANDS)


def test_stimuli_build_twice_reports_the_same_manifest_hash(capsys):
    hashes = []
    for _ in range(2):
        assert main(["stimuli", "build", "--set", "ci"]) == 0
        out = capsys.readouterr().out
        hashes.append(re.search(r"manifest hash ([0-9a-f]{16})", out).group(1))
    assert hashes[0] == hashes[1]


def test_transcribe_a_synthesized_file(tmp_path, sentence_audio, capsys):
    path = tmp_path / "fox.wav"
    write_audio(path, sentence_audio)
    assert main(["transcribe", "--model", "tiny.en", str(path)]) == 0
    line = capsys.readouterr().out.strip().splitlines()[-1]
    assert line.startswith(str(path)) and "no_speech_prob=" in line
    assert "quick brown fox" in line.lower()


def test_bad_input_is_one_clear_error(tmp_path, capsys):
    empty = tmp_path / "empty.wav"
    soundfile.write(empty, np.zeros(0, np.float32), 16000)  # wspec itself refuses to write one
    assert main(["transcribe", "--model", "tiny.en", str(empty)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("wspec: error:") and "empty" in err.lower()
    assert "Traceback" not in err
    assert main(["transcribe", "--model", "no-such-model", str(empty)]) == 1
    assert "wspec models" in capsys.readouterr().err


def test_a_user_folder_cannot_replace_a_builtin_set(tmp_path, capsys):
    (tmp_path / "a.txt").write_text("hello")
    assert main(["stimuli", "build", "--set", "default", "--user-dir", str(tmp_path)]) == 1
    assert "built-in stimulus set" in capsys.readouterr().err
    args = build_parser().parse_args(["stimuli", "build", "--user-dir", str(tmp_path)])
    assert args.set is None  # resolved to "user" by the command, never to "default"

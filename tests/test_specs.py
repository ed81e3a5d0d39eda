"""Model specs: one rule for untrained controls, one for file names."""

from __future__ import annotations

from wspec.models.resolve import unknown_spec_message
from wspec.paths import safe_name
from wspec.specs import is_untrained, trained_models, untrained_twin


def test_untrained_controls_are_recognised_by_one_rule() -> None:
    assert is_untrained("random:tiny.en") and is_untrained(" Random:base")
    assert not is_untrained("tiny.en") and not is_untrained("openai/whisper-large-v3-turbo")
    assert untrained_twin("base") == "random:base" == untrained_twin("random:base")
    assert trained_models(["random:tiny.en", "tiny.en", "base"]) == ["tiny.en", "base"]
    # Only controls were run: they are what there is to show.
    assert trained_models(["random:tiny.en"]) == ["random:tiny.en"]


def test_unknown_model_message_names_each_control_once() -> None:
    message = unknown_spec_message("tiny-typo")
    controls = message.split("untrained control (")[1].split(")")[0].split(", ")
    assert len(controls) == len(set(controls))
    assert {"random:tiny.en", "random:base", "random:large-v2"} <= set(controls)


def test_safe_name_keeps_names_apart_and_out_of_folders() -> None:
    assert safe_name("tiny.en") == "tiny.en"
    assert safe_name("openai/whisper-large-v3-turbo") == "openai_whisper-large-v3-turbo"
    assert safe_name("random:base") == "random_base"
    assert "/" not in safe_name("../../etc/passwd") and ":" not in safe_name("C:\\x")

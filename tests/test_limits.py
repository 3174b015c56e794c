"""On a shared Space one visitor cannot start work that would stop the Space for everyone."""
import dataclasses

import gradio_client
import pytest
from gradio_client.exceptions import AppError

from llm import catalog, limits
from llm.checkpoints import CheckpointError


@pytest.fixture
def on_spaces(monkeypatch):
    monkeypatch.setenv("LLM_LAB_LIMITS", "spaces")
    assert limits.current() is limits.SPACES


def test_spaces_is_detected_from_huggingface_environment(monkeypatch):
    monkeypatch.delenv("LLM_LAB_LIMITS", raising=False)
    monkeypatch.delenv("SYSTEM", raising=False)
    assert limits.current() is limits.LOCAL and limits.LOCAL.describe() == ""
    monkeypatch.setenv("SYSTEM", "spaces")
    assert limits.current() is limits.SPACES
    monkeypatch.setenv("LLM_LAB_LIMITS", "local")
    assert limits.current() is limits.LOCAL


def test_training_limits_give_clear_messages():
    with pytest.raises(ValueError, match="163.0M parameters; training here is limited to 130M"):
        limits.SPACES.check_training(163_000_000, 10)
    with pytest.raises(ValueError, match="5,000 steps; the limit here is 3,000"):
        limits.SPACES.check_training(1_000_000, 5_000)
    limits.SPACES.check_training(124_000_000, 3_000)  # within the limits: no error


def test_large_gpt2_sizes_are_unavailable_on_spaces_with_the_reason(on_spaces):
    entries = {e.key: e for e in catalog.list_models()}
    for size in ("gpt2-large", "gpt2-xl"):
        assert not entries[size].available and "shared Space" in entries[size].reason
        with pytest.raises(CheckpointError, match="larger than this shared Space allows"):
            catalog.load_model(size, download=True)  # refused before any download is tried
    assert "not downloaded" in entries["gpt2-medium"].reason  # allowed size: only missing here


def test_the_app_enforces_the_limits_on_api_calls(lab_url, on_spaces, monkeypatch):
    client = gradio_client.Client(lab_url, verbose=False)
    with pytest.raises(AppError, match="between 1 and 256"):
        client.predict("lab-tiny", "Every effort", 300, 0, None, None, None, True, False, api_name="/generate")
    # A tiny model but a run far beyond the step limit (the full data, batch 1, 5 epochs).
    with pytest.raises(AppError, match="the limit here is 3,000"):
        client.predict("lab-tiny", "full", "head", 1, 8, 5, 1e-3, 1, 0, 1, api_name="/finetune_spam")
    # A Space whose parameter limit is below lab-tiny's 3.3M refuses to fine-tune it.
    monkeypatch.setattr(limits, "SPACES", dataclasses.replace(limits.SPACES, max_train_parameters=1_000_000))
    with pytest.raises(AppError, match="training here is limited to 1M"):
        client.predict("lab-tiny", "balanced", "head", 1, 8, 1, 1e-3, 8, 2, 1, api_name="/finetune_spam")

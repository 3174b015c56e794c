"""Chapter 6's and 7's point, on the bundled Wharton GPT: the same fine-tuning recipe gets much further
from pretrained weights than from random ones. The Classify and Instruct tabs can run the recipe on a
random model of the same shape (`llm.catalog.random_twin`) beside the picked base and show both."""
from __future__ import annotations

import torch

from llm.catalog import load_model, random_twin
from llm.classifier import finetune_spam
from llm.paths import BUNDLED_KEY
from llm.recipes import SPAM_SMALL
from llm.ui import classify_tab
from llm.ui.run_view import PRETRAINED, RANDOM


def test_a_random_twin_has_the_shape_of_the_base_and_none_of_its_weights():
    base = load_model(BUNDLED_KEY)
    twin, again = random_twin(BUNDLED_KEY), random_twin(BUNDLED_KEY)
    assert twin.config == base.config and twin.task == "lm"
    assert not torch.equal(twin.model.tok_emb.weight, base.model.tok_emb.weight)
    assert torch.equal(twin.model.tok_emb.weight, again.model.tok_emb.weight)  # seeded: every run compares alike
    assert twin.model is not again.model  # private copies: training one leaves the other as it is


def test_a_measured_job_is_not_saved(tmp_path):
    job = finetune_spam(random_twin("lab-tiny"), SPAM_SMALL, out=tmp_path, max_steps=2, eval_batches=1)
    for _ in job:
        pass
    result = job.measure()
    assert result.path is None and result.steps == 2 and 0 <= result.test_acc <= 1
    assert list(tmp_path.iterdir()) == []
    assert job.finish(tmp_path / "kept.safetensors").path.exists()  # a measured job can still be kept


def _last(frames):
    for frame in frames:
        last = frame
    return last


def test_the_classify_tab_trains_a_random_twin_beside_the_base_and_shows_both():
    out = _last(classify_tab.finetune(BUNDLED_KEY, "balanced", "last-block", 2, 4, 1, 1e-3, 8, 12, 123,
                                      eval_batches=2, compare=True))
    compared = out[4]["value"]
    assert set(compared["base"]) == {PRETRAINED, RANDOM} and out[4]["visible"]
    assert "A random model of the same shape, same recipe: test accuracy" in out[5]
    assert "Pretraining is worth" not in out[0]  # the status line ends with the saved base model
    assert out[7].endswith(".safetensors")  # the base's classifier is saved, the twin is not


def test_without_compare_no_twin_is_trained():
    out = _last(classify_tab.finetune(BUNDLED_KEY, "balanced", "head", 2, 4, 1, 1e-3, 8, 3, 123, eval_batches=1))
    assert "random model" not in out[5]


def test_the_cli_compares_with_a_random_twin_on_request(tmp_path, capsys):
    from llm.__main__ import main

    out = tmp_path / "spam.safetensors"
    assert main(["finetune-spam", "--base", BUNDLED_KEY, "--max-steps", "6", "--eval-batches", "1",
                 "--compare-random", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "a random model of the same shape, same recipe: test accuracy" in printed
    assert list(tmp_path.iterdir()) == [out]  # only the pretrained base's classifier is saved

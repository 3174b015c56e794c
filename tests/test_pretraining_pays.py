"""Chapter 6's and 7's point, on the bundled Wharton GPT: the same fine-tuning recipe gets further
from pretrained weights than from random ones. The Classify and Instruct tabs can run the recipe on a
random model of the same shape (`llm.catalog.random_twin`) beside the picked base and show both."""
from __future__ import annotations

import pytest
import torch

from llm.catalog import load_model, random_twin
from llm.classifier import finetune_spam
from llm.instruct import INSTRUCTION_DATA, finetune_instruct, load_instruction_file, split_instruction_data
from llm.paths import BUNDLED_KEY
from llm.quality import probe_replies
from llm.recipes import INSTRUCT_SMALL, SPAM_SMALL
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
                 "--trainable", "last-block", "--compare-random", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    changed = "policy last-block, epochs None, max_steps 6, eval_batches 1"
    assert f"recipe: {SPAM_SMALL.note}; changed here: {changed}" in printed
    assert "a random model of the same shape, same recipe: test accuracy" in printed
    assert "pretraining is worth" in printed
    assert list(tmp_path.iterdir()) == [out]  # only the pretrained base's classifier is saved


def test_pretraining_pays_for_spam_classification():
    """The small-base recipe (every layer at lr 1e-3, token embeddings 10x faster, batch 16, 2 epochs: 130 steps,
    about 30 s) on the bundled model reaches the 95 % that chapter 6 shows, and beats the same recipe on random
    weights. Measured on 2 threads: 95.7 % against 93.3 % test accuracy (validation: 98.7 % against 95.3 %);
    95.3-97.3 % over seeds 1-5. The gap is small because this recipe trains every layer, so random weights
    learn too; the book's last-block recipe stops at 89.7 % on this base (llm.recipes.SPAM_SMALL)."""
    pretrained = finetune_spam(BUNDLED_KEY, SPAM_SMALL)
    twin = finetune_spam(random_twin(BUNDLED_KEY), SPAM_SMALL)
    results = []
    for job in (pretrained, twin):
        for _ in job:
            pass
        results.append(job.measure())
    assert results[0].test_acc >= 0.95
    assert results[0].test_acc >= results[1].test_acc + 0.01
    assert results[0].val_acc >= results[1].val_acc + 0.02


@pytest.fixture(scope="module")
def instruction_splits():
    return split_instruction_data(load_instruction_file(INSTRUCTION_DATA))


def test_pretraining_pays_for_instruction_following(instruction_splits):
    """Two epochs of the small-base recipe: the bundled model's replies read as English and end cleanly,
    and its validation loss is well below a random model's of the same shape under the same recipe, whose
    replies repeat themselves (measured: 1.782 against 2.264, 232 steps each, about 2 minutes each on 2 cores)."""
    s = instruction_splits
    losses, problems = {}, {}
    for name, model in (("pretrained", load_model(BUNDLED_KEY, fresh=True).model),
                        ("random", random_twin(BUNDLED_KEY).model)):
        job = finetune_instruct(model, s.train, s.val, INSTRUCT_SMALL, eval_batches=5)
        for _ in job:
            pass
        losses[name] = job.measure().val_loss
        problems[name] = probe_replies(model.eval())
    assert not problems["pretrained"][1], problems["pretrained"][0]
    assert problems["random"][1]  # the chat would not show its ✅ for the random model
    assert losses["pretrained"] <= 2.0
    assert losses["pretrained"] <= losses["random"] - 0.25

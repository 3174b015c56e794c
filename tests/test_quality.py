"""llm.quality: the checks behind the chat tab's ✅ and the bundled model's held-out loss."""
from llm.quality import english_share, repeated_ngram, reply_problems, text_loss


def test_a_clean_english_reply_has_no_problems():
    assert reply_problems("The capital of Italy is Rome.") == []


def test_gibberish_loops_and_cut_replies_are_named():
    assert any("English" in p for p in reply_problems("Hats walletwallet opoulosopoulos Joan weakest."))
    assert any("repeats" in p for p in reply_problems("I don't know what I don't know what I don't know what I do."))
    assert any("mid-sentence" in p for p in reply_problems("The capital of Italy is"))
    assert reply_problems("   ") == ["the reply has no words"]


def test_english_share_and_repetition():
    assert english_share("the house and the room") == 1.0
    assert english_share("qzxv blorft the") < 0.5
    assert repeated_ngram("a b c d a b c d a b c d") == "a b c d"
    assert repeated_ngram("one two three four five six") is None


def test_text_loss_of_a_random_model_is_near_uniform():
    import math

    import torch

    from llm.config import PRESETS
    from llm.model import GPTModel
    torch.manual_seed(0)
    model = GPTModel(PRESETS["lab-tiny"]).eval()
    loss = text_loss(model, "The verdict was a surprise to everyone who had known him. " * 20)
    assert abs(loss - math.log(50257)) < 1.5

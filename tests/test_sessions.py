"""Two sessions at once: two `gradio_client` clients fine-tune and generate at the same time.

One client is one browser session. Session A and session B each fine-tune `lab-tiny` into a
spam classifier with their own settings while both also stream a generation; the checks are
that each gets the results of its own settings, that sampling with a seed gives the same
tokens as the same call made alone, and that neither session can see or use the other's model.
"""
from pathlib import Path

import pytest

gradio_client = pytest.importorskip("gradio_client")
from gradio_client.exceptions import AppError  # noqa: E402

# /finetune_spam: base, data, policy, k, rank, epochs, lr, batch size, max steps, seed
SPAM = {"A": ("lab-tiny", "balanced", "head", 2, 4, 1, 1e-3, 8, 2, 1),
        "B": ("lab-tiny", "balanced", "last-block", 2, 4, 1, 2e-3, 8, 3, 2)}
# /generate: model, prompt, max new tokens, temperature, top-k, top-p, seed, KV cache, coloured
GENERATE = {"A": ("lab-tiny", "Every effort moves you", 12, 1.0, 50, 1.0, 1, True, False),
            "B": ("lab-tiny", "The meaning of life is", 9, 1.0, 50, 1.0, 2, True, False)}


def _picker(outputs) -> dict:
    """The classifier picker's update among a fine-tuning run's final outputs."""
    return next(o for o in outputs if isinstance(o, dict) and o.get("__type__") == "update" and "choices" in o)


def _checkpoint(outputs) -> Path:
    """The checkpoint offered for download (Gradio's copy of the file)."""
    return next(Path(o) for o in outputs if isinstance(o, str) and o.endswith(".safetensors"))


def _model_key(outputs) -> str:
    """The picker key of the model a run saved: the checkpoint's own path on the server."""
    return _picker(outputs)["value"]


def _tokens(job) -> list[int]:
    return job.outputs()[-1][2]["token_ids"]


@pytest.fixture(scope="module")
def sessions(lab_url):
    """Both sessions' clients and final results, from runs started together."""
    clients = {name: gradio_client.Client(lab_url, verbose=False) for name in "AB"}
    training = {name: clients[name].submit(*SPAM[name], api_name="/finetune_spam") for name in "AB"}
    generating = {name: clients[name].submit(*GENERATE[name], api_name="/generate") for name in "AB"}
    for job in [*training.values(), *generating.values()]:
        list(job)  # wait for the end of the stream; errors surface in outputs below
    for client in clients.values():
        client.predict(api_name="/register_spam_classifier")  # the `.then` step the browser runs by itself
    return {name: {"client": clients[name], "trained": training[name].outputs()[-1],
                   "tokens": _tokens(generating[name])} for name in "AB"}


def test_each_session_gets_the_results_of_its_own_settings(sessions):
    from llm.checkpoints import load_checkpoint

    paths = {name: _checkpoint(s["trained"]) for name, s in sessions.items()}
    keys = {name: _model_key(s["trained"]) for name, s in sessions.items()}
    assert keys["A"] != keys["B"]
    for name, s in sessions.items():
        ckpt = load_checkpoint(paths[name])
        _, _, policy, _, _, _, lr, _, steps, seed = SPAM[name]
        assert ckpt.task == "classifier"
        assert (ckpt.training["policy"], ckpt.training["lr"], ckpt.training["steps"], ckpt.training["seed"]) == \
            (policy, lr, steps, seed)
        result = next(o for o in s["trained"] if isinstance(o, str) and "Test accuracy" in o)
        assert f"after {steps} steps" in result
        assert Path(keys[name]).name == paths[name].name  # its own new model is picked


def test_generation_during_the_other_session_s_training_is_reproducible(sessions):
    """A seeded generation gives the same tokens alone as it gave while the other session worked."""
    for name, s in sessions.items():
        assert len(s["tokens"]) == GENERATE[name][2]
        alone = s["client"].submit(*GENERATE[name], api_name="/generate")
        list(alone)
        assert _tokens(alone) == s["tokens"]
    assert sessions["A"]["tokens"] != sessions["B"]["tokens"]


def test_each_session_can_use_its_own_model(sessions):
    for s in sessions.values():
        label, _, _ = s["client"].predict(_model_key(s["trained"]), "WINNER! Claim your free prize now",
                                          api_name="/classify")
        assert {c["label"] for c in label["confidences"]} == {"ham", "spam"}


def test_neither_session_sees_or_uses_the_other_s_model(sessions):
    """A model trained in the app is kept in the session's own folder, not the shared checkpoints folder."""
    for name, other in (("A", "B"), ("B", "A")):
        mine = sessions[name]
        theirs = _model_key(sessions[other]["trained"])
        choices = [key for _, key in _picker(mine["trained"])["choices"]]
        assert theirs not in choices, f"session {name}'s picker lists session {other}'s model"
        with pytest.raises(AppError, match="not one of the models|not in the list of choices"):
            mine["client"].predict(theirs, "WINNER! Claim your free prize now", api_name="/classify")
            pytest.fail(f"session {name} classified with session {other}'s model")


def test_a_model_kept_in_the_checkpoints_folder_is_listed_for_every_session(sessions, lab_url):
    """'Also keep the model in the lab's checkpoints folder': the one way a session shares a model."""
    from llm.paths import checkpoints_dir

    keeper, other = (gradio_client.Client(lab_url, verbose=False) for _ in range(2))
    kept = keeper.submit(*SPAM["A"], True, api_name="/finetune_spam")
    list(kept)
    keeper.predict(api_name="/register_spam_classifier")
    key = _model_key(kept.outputs()[-1])
    assert Path(key).parent == checkpoints_dir().resolve()
    assert "kept in the lab's checkpoints folder" in kept.outputs()[-1][0]
    mine = other.submit(*SPAM["B"], api_name="/finetune_spam")
    list(mine)
    assert "kept for this session only" in mine.outputs()[-1][0]
    assert key in [k for _, k in _picker(mine.outputs()[-1])["choices"]]
    label, _, _ = other.predict(key, "WINNER! Claim your free prize now", api_name="/classify")
    assert {c["label"] for c in label["confidences"]} == {"ham", "spam"}


def test_the_session_folder_goes_when_the_session_ends_and_nothing_else(tmp_path):
    from llm.ui.shared import checkpoint_folder, remove_folder

    target = checkpoint_folder(False, None)
    assert not target.in_catalog and target.folder.is_dir() and target.session_dir == str(target.folder)
    assert checkpoint_folder(False, target.session_dir).folder == target.folder  # the same folder next time
    remove_folder(target.session_dir)
    assert not target.folder.exists()
    (tmp_path / "model.safetensors").write_bytes(b"x")
    remove_folder(str(tmp_path))  # a folder the session did not make is never removed
    assert (tmp_path / "model.safetensors").exists()


def test_a_display_that_follows_a_change_never_drops_the_last_one():
    """A run selects its model in its picker, then adds it to the session's list: two change events
    moments apart. A listener in Gradio's "once" mode drops the second while the first is pending,
    and the display (the chat's note, the model's line) is left describing an unknown model."""
    from llm.ui.app import build_app

    demo = build_app()
    dropping = [fn.name for fn in demo.fns.values()
                if fn.trigger_mode == "once" and any(event == "change" for _, event in fn.targets)]
    assert dropping == []

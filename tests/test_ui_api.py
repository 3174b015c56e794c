"""The lab's Tokenize, Embeddings, Attention and Generate tabs, driven through their named API endpoints.

One `gradio_client.Client` talks to the whole app launched on a free local port
(fixture `lab_url` in conftest.py). Models are the randomly initialised `lab-tiny` preset.
"""
import base64
import json

import numpy as np
import pytest

gradio_client = pytest.importorskip("gradio_client")
from gradio_client.exceptions import AppError  # noqa: E402

MODEL = "lab-tiny"  # context 64, 2 layers, 4 heads


@pytest.fixture(scope="module")
def client(lab_url):
    return gradio_client.Client(lab_url, verbose=False)


def plot_data(plot) -> list[dict]:
    """The plotly traces of a `gr.Plot` output as the browser receives them."""
    return json.loads(plot["plot"])["data"]


def as_array(values) -> np.ndarray:
    """A plotly data array: plain JSON lists, or plotly 6's base64 typed arrays."""
    if isinstance(values, dict) and "bdata" in values:
        flat = np.frombuffer(base64.b64decode(values["bdata"]), dtype=np.dtype(values["dtype"]))
        shape = [int(n) for n in str(values.get("shape", len(flat))).split(",")]
        return flat.reshape(shape).astype(float)
    return np.array(values, dtype=float)


def table_rows(table) -> list[list]:
    return table["value"]["data"] if "value" in table else table["data"]


# --- Tokenize --------------------------------------------------------------------------

def test_tokenize_gives_tiktoken_ids_and_counts(client):
    status, html, ids = client.predict("Hello, world", api_name="/tokenize")
    assert ids == [15496, 11, 995]
    assert "**12** characters" in status and "**3** GPT-2 tokens" in status and "**4.00** characters per token" in status
    assert "·world" in html  # the space before "world" is made visible
    assert "SimpleTokenizerV2" in html and "Characters" in html


def test_tokenize_book_example_treats_endoftext_as_the_special_token(client):
    text = "Hello, do you like tea? <|endoftext|> In the sunlit terraces of someunknownPlace."
    status, html, ids = client.predict(text, api_name="/tokenize")
    assert ids == [15496, 11, 466, 345, 588, 8887, 30, 220, 50256, 554, 262, 4252, 18250, 8812, 2114, 286,
                   617, 34680, 27271, 13]
    assert "special end-of-text token" in status
    assert "someunknownPlace→&lt;|unk|&gt;" in html  # the simple tokenizer does not know this word


def test_tokenize_shows_byte_pieces_of_emoji(client):
    status, html, ids = client.predict("🤖", api_name="/tokenize")
    assert len(ids) == 3
    assert "`🤖` (3 tokens)" in status
    assert "&lt;0xF0&gt;&lt;0x9F&gt;" in html  # the bytes of a partial token are shown, not U+FFFD
    assert "\ufffd" not in html


def test_tokenize_strips_control_characters_with_a_notice(client):
    status, _, ids = client.predict("bell\x07 and null\x00 here", api_name="/tokenize")
    assert "Removed 2 control character(s)" in status
    assert ids == client.predict("bell and null here", api_name="/tokenize")[2]


def test_tokenize_truncates_very_long_text_with_a_notice(client):
    status, _, ids = client.predict("a" * 100_000, api_name="/tokenize")
    assert "100,000 characters" in status and "first 20,000" in status
    assert "**20,000** characters" in status


@pytest.mark.parametrize("text", ["", "   \n ", "\x00\x01"])
def test_tokenize_refuses_empty_text(client, text):
    with pytest.raises(AppError, match="empty|only control characters"):
        client.predict(text, api_name="/tokenize")


def test_sliding_window_pairs_are_shifted_by_one(client):
    status, table = client.predict("In the sunlit terraces of the old city, children played.", 4, 2,
                                   api_name="/sliding_window")
    rows = table_rows(table)
    assert rows, status
    for _, _, input_ids, _, target_ids in rows:
        x, y = json.loads(input_ids), json.loads(target_ids)
        assert len(x) == len(y) == 4 and x[1:] == y[:-1]
    assert json.loads(rows[1][2])[0] == json.loads(rows[0][2])[2]  # stride 2
    assert "input/target pairs" in status


# --- Embeddings ------------------------------------------------------------------------

def test_embeddings_heatmaps_and_map(client):
    status, heatmaps, pca = client.predict(MODEL, "Every effort moves you", "king, queen, Paris",
                                           api_name="/embeddings")
    assert "random" in status  # the tab says a random model shows noise
    traces = plot_data(heatmaps)
    assert len(traces) == 3  # token, positional, input
    tok, pos, inp = (as_array(t["z"]) for t in traces)
    assert tok.shape == (4, 64)
    np.testing.assert_allclose(inp, tok + pos, atol=1e-5)
    points = sum(len(as_array(t["x"])) for t in plot_data(pca))
    assert points == 4 + 3


def test_nearest_neighbours_are_sorted_by_cosine_similarity(client):
    status, table = client.predict(MODEL, "king", 7, api_name="/neighbours")
    rows = table_rows(table)
    assert len(rows) == 7
    sims = [r[3] for r in rows]
    assert sims == sorted(sims, reverse=True) and all(-1 <= s <= 1 for s in sims)
    assert 5822 not in [r[2] for r in rows]  # " king" is not its own neighbour
    assert "·king" in status


# --- Attention -------------------------------------------------------------------------

def test_attention_rows_sum_to_one_and_future_is_masked(client):
    status, heatmap, steps, numbers = client.predict(MODEL, "Your journey starts with one step", 1, 3,
                                                     "one head", api_name="/attention")
    w = np.array(numbers["weights"])
    n = len(numbers["token_ids"])
    assert w.shape == (n, n) == (6, 6)
    np.testing.assert_allclose(w.sum(axis=1), 1.0, atol=1e-4)
    assert np.all(w[np.triu_indices(n, k=1)] == 0)
    traces = {t["name"]: t for t in plot_data(heatmap)}
    z = as_array(traces["attention weights"]["z"])  # masked cells are left out, drawn grey underneath
    np.testing.assert_allclose(z[np.tril_indices(n)], w[np.tril_indices(n)], atol=1e-4)
    assert np.isnan(z[np.triu_indices(n, k=1)]).all()
    grey = as_array(traces["causal mask"]["z"])
    assert (grey[np.triu_indices(n, k=1)] == 1).all() and np.isnan(grey[np.tril_indices(n)]).all()
    assert len(plot_data(steps)) == 8  # Q, K, QK^T, scaled, masked, softmax, V, weights x V


@pytest.mark.parametrize("view, traces", [("all heads of the layer", 8), ("mean of the heads", 2)])
def test_attention_grid_and_mean_views(client, view, traces):
    _, heatmap, _, _ = client.predict(MODEL, "Your journey starts with one step", 0, 0, view, api_name="/attention")
    assert len(plot_data(heatmap)) == traces  # weights + grey causal mask, per head


def test_attention_refuses_a_layer_the_model_does_not_have(client):
    with pytest.raises(AppError, match="2 layers"):
        client.predict(MODEL, "Your journey", 5, 0, "one head", api_name="/attention")


def test_attention_crops_text_longer_than_the_context(client):
    status, _, _, numbers = client.predict(MODEL, "word " * 200, 0, 0, "one head", api_name="/attention")
    assert len(numbers["token_ids"]) == 64 and "only the first 64" in status


def test_logit_lens_last_block_is_the_models_own_prediction(client):
    prompt = "Every effort moves you"
    _, table, numbers = client.predict(MODEL, prompt, api_name="/logit_lens")
    assert [b["layer"] for b in numbers["blocks"]] == [0, 1]
    last = numbers["blocks"][-1]
    lens_id, lens_prob = last["top_ids"][-1][0], last["top_probs"][-1][0]
    _, dist, _ = client.predict(MODEL, prompt, 1.0, None, 1.0, api_name="/next_token")
    top = table_rows(dist)[0]
    assert lens_id == top[1]
    assert lens_prob == pytest.approx(top[2], abs=1e-4)
    assert len(table_rows(table)) == 2


# --- Generate --------------------------------------------------------------------------

def test_generation_streams_the_requested_number_of_tokens(client):
    job = client.submit(MODEL, "Every effort moves you", 12, 0.8, 40, 0.95, 7, True, True, api_name="/generate")
    updates = list(job)
    details = updates[-1][2]
    assert len(details["token_ids"]) == 12 and details["done"]
    assert len(updates) >= 12  # one update per token, then the final one
    assert [len(u[2]["token_ids"]) for u in updates[:3]] == [1, 2, 3]
    assert all(0 < p <= 1 for p in details["probs"])
    assert "tokens/s" in updates[-1][1]


def test_seeded_generation_repeats_and_greedy_says_so(client):
    args = (MODEL, "Every effort moves you", 6, 1.2, 20, 1.0, 11, True, False)
    first = client.predict(*args, api_name="/generate")[2]["token_ids"]
    assert client.predict(*args, api_name="/generate")[2]["token_ids"] == first
    _, stats, details = client.predict(MODEL, "Every effort moves you", 6, 0, None, None, None, False, False,
                                       api_name="/generate")
    assert "greedy" in stats and "KV cache off" in stats
    cached = client.predict(MODEL, "Every effort moves you", 6, 0, None, None, None, True, False,
                            api_name="/generate")[2]
    assert cached["token_ids"] == details["token_ids"]


def test_float16_weights_stream_the_same_greedy_tokens_and_int8_streams_too(client):
    args = (MODEL, "Every effort moves you", 10, 0, None, None, None, True, False)
    exact = client.predict(*args, "fp32", api_name="/generate")
    half = client.predict(*args, "fp16", api_name="/generate")
    assert "fp32 weights" in exact[1] and "fp16 weights" in half[1]
    assert len(half[2]["token_ids"]) == 10 and half[2]["done"]
    assert half[2]["token_ids"] == exact[2]["token_ids"]
    int8 = client.predict(*args, "int8", api_name="/generate")  # agreement: tests/test_generation.py
    assert "int8 weights" in int8[1] and len(int8[2]["token_ids"]) == 10


def test_next_token_probabilities_sum_to_at_most_one(client):
    for temperature, top_k, top_p in [(1.0, None, 1.0), (0.5, 3, 1.0), (2.0, 50, 0.5), (0.0, None, 1.0)]:
        _, table, status = client.predict(MODEL, "Every effort moves you", temperature, top_k, top_p,
                                          api_name="/next_token")
        rows = table_rows(table)
        assert len(rows) == 10
        model_p = [r[2] for r in rows]
        sampling_p = [r[3] for r in rows]
        assert model_p == sorted(model_p, reverse=True)
        assert sum(model_p) <= 1 and sum(sampling_p) <= 1
        assert all(0 <= p <= 1 for p in model_p + sampling_p)
        if top_k == 3:
            assert sum(p > 0 for p in sampling_p) == 3
            assert sum(sampling_p) == pytest.approx(1, abs=1e-3)
        if temperature == 0:
            assert sampling_p[0] == 1 and "greedy" in status


@pytest.mark.parametrize("temperature, top_k, top_p, message", [
    (-0.5, 50, 1.0, "temperature must be 0"),
    (1.0, 0, 1.0, "top-k must be between 1"),
    (1.0, 60_000, 1.0, "top-k must be between 1"),
    (1.0, 50, 0.0, r"top-p must be in \(0, 1\]"),
    (1.0, 50, 1.5, r"top-p must be in \(0, 1\]"),
])
def test_bad_sampling_knobs_get_a_clear_message(client, temperature, top_k, top_p, message):
    with pytest.raises(AppError, match=f"(?i){message}"):
        client.predict(MODEL, "Every effort", temperature, top_k, top_p, api_name="/next_token")
    with pytest.raises(AppError, match=f"(?i){message}"):
        client.predict(MODEL, "Every effort", 5, temperature, top_k, top_p, 1, True, False, api_name="/generate")


def test_max_new_tokens_beyond_the_context_is_refused(client):
    with pytest.raises(AppError, match="context length \\(64\\)"):
        client.predict(MODEL, "Every effort", 100, 0, None, None, None, True, False, api_name="/generate")


def test_empty_prompt_is_refused(client):
    with pytest.raises(AppError, match="empty"):
        client.predict(MODEL, "  ", 5, 0, None, None, None, True, False, api_name="/generate")


def test_long_prompt_is_cropped_from_the_left_with_a_notice(client):
    _, stats, details = client.predict(MODEL, "tea " * 300, 3, 0, None, None, None, True, False,
                                       api_name="/generate")
    assert "only the last 64" in stats and len(details["prompt_ids"]) == 64 and len(details["token_ids"]) == 3


def test_kv_cache_comparison_reports_both_speeds(client):
    report = client.predict(MODEL, "Every effort moves you", 20, api_name="/compare_cache")
    assert "with KV cache" in report and "without" in report and "the same tokens" in report


# --- the shell: model picker, upload, status ----------------------------------------------

def test_unknown_model_is_refused(client):
    with pytest.raises(AppError, match="not in the list of choices|not one of the models"):
        client.predict("/etc/passwd", "hi", 0, 0, "one head", api_name="/attention")


def test_uploading_a_file_that_is_not_a_checkpoint_is_refused(client, tmp_path):
    bogus = tmp_path / "notes.safetensors"
    bogus.write_bytes(b"this is not a checkpoint at all")
    with pytest.raises(AppError, match="not a usable checkpoint"):
        client.predict(gradio_client.handle_file(str(bogus)), api_name="/upload_model")
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    with pytest.raises(AppError, match="not a checkpoint|Invalid file type"):
        client.predict(gradio_client.handle_file(str(text)), api_name="/upload_model")


def test_uploading_a_lab_checkpoint_adds_it_to_the_picker(client, tmp_path, tiny_cfg):
    from llm.checkpoints import save_checkpoint
    from llm.model import GPTModel

    path = save_checkpoint(tmp_path / "mine.safetensors", GPTModel(tiny_cfg))
    picker, message = client.predict(gradio_client.handle_file(str(path)), api_name="/upload_model")
    assert "Loaded **mine.safetensors**" in message and "2 layers" in message and "context 32" in message
    assert picker["value"].endswith("mine.safetensors")
    assert picker["value"] in [value for _, value in picker["choices"]]


def test_hub_check_reports_offline_mode_without_network(client):
    status = client.predict(api_name="/check_hub")
    assert "HF_HUB_OFFLINE" in status and "device:" in status and "torch threads" in status


def test_a_gpt2_size_that_is_not_downloaded_says_so(client):
    from llm.checkpoints import cached_gpt2_path

    if cached_gpt2_path("gpt2-xl") is not None:
        pytest.skip("gpt2-xl is in this machine's Hugging Face cache")
    with pytest.raises(AppError, match="not available: not downloaded"):
        client.predict("gpt2-xl", "Every effort", 1.0, None, 1.0, api_name="/next_token")


def test_session_models_are_listed_for_their_session_only(tmp_path, tiny_cfg):
    import gradio as gr

    from llm.checkpoints import save_checkpoint
    from llm.model import GPTModel
    from llm.ui.shared import get_model, model_choices, register_session_model

    path = save_checkpoint(tmp_path / "trained.safetensors", GPTModel(tiny_cfg))
    session = register_session_model([], path, "trained here")
    assert session == [{"path": str(path.resolve()), "label": "trained here", "task": "lm", "kind": "session"}]
    assert register_session_model(session, path, "renamed")[0]["label"] == "renamed"  # no duplicates
    labels = dict((key, label) for label, key in model_choices(session))
    assert labels[str(path.resolve())].startswith("trained here")
    assert str(path.resolve()) not in dict((k, v) for v, k in model_choices([]))
    assert get_model(str(path.resolve()), session).model.cfg == tiny_cfg
    with pytest.raises(gr.Error, match="not one of the models"):
        get_model(str(path.resolve()), [])  # another session cannot open this file

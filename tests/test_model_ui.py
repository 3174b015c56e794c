"""The Model tab (chapter 4) through its named API endpoints, and in a browser with screenshots.

One `gradio_client.Client` per module talks to the whole lab (fixture `lab_url` in conftest.py);
the models are the random `lab-tiny` preset and an uploaded classifier. The book's `.pth` is traced in
test_architecture.py: a small one's head count cannot be read from its tensors (the picker infers it from
GPT-2's widths), and a GPT-2-wide one is too large to upload in a test.
"""
import numpy as np
import pytest

gradio_client = pytest.importorskip("gradio_client")
from gradio_client.exceptions import AppError  # noqa: E402
from conftest import screenshot  # noqa: E402
from test_ui_api import as_array, plot_data  # noqa: E402

MODEL = "lab-tiny"  # context 64, 2 blocks, 4 heads, emb_dim 64
TEXT = "Every effort moves you"  # 4 GPT-2 tokens
STAGES = ["ids", "tok_emb", "pos_emb", "embed", "norm1", "att", "shortcut1", "norm2", "ff_expand", "gelu", "ff",
          "block_out", "final_norm", "out_head", "next"]


@pytest.fixture(scope="module")
def client(lab_url):
    return gradio_client.Client(lab_url, verbose=False)


def rows(table) -> list[list]:
    return table["value"]["data"] if "value" in table else table["data"]


def upload(client, path) -> str:
    picker, _ = client.predict(gradio_client.handle_file(str(path)), api_name="/upload_model")
    return picker["value"]


def test_flow_shows_every_stage_with_this_texts_shapes(client):
    status, html, shapes, _ = client.predict(MODEL, TEXT, 1, 2, "att", api_name="/model_flow")
    assert "4 tokens" in status and "2 transformer blocks" in status and "random" in status
    assert [s["key"] for s in shapes] == STAGES
    by_key = {s["key"]: s for s in shapes}
    assert by_key["ids"]["shape"] == [1, 4]
    assert by_key["pos_emb"]["shape"] == [4, 64]
    assert by_key["ff_expand"]["shape"] == [1, 4, 256]
    assert by_key["out_head"]["shape"] == [1, 4, 50257]
    assert by_key["norm1"]["module"] == "trf_blocks[1].norm1" and by_key["norm1"]["section"] == "4.2"
    for piece in ("tok_emb", "trf_blocks[1].att", "final_norm", "out_head", "(1, 4, 50,257)", "§4.4"):
        assert piece in html


@pytest.mark.parametrize("stage", STAGES)
def test_every_stage_shows_its_numbers_at_a_token(client, stage):
    figure, table = client.predict(MODEL, TEXT, 1, 2, stage, api_name="/model_stage")
    data, table = plot_data(figure), rows(table)
    if stage in ("out_head", "next"):
        assert len(table) == 10 and [r[0] for r in table] == list(range(1, 11))
        values = [r[4 if stage == "next" else 3] for r in table]
        assert values == sorted(values, reverse=True)
        assert all(0 <= r[4] <= 1 for r in table)
    elif stage == "ids":
        assert table == [[2, " moves", 6100]]
    else:
        stats = dict((r[0], r[1]) for r in table)
        assert int(stats["values"]) == (256 if stage in ("ff_expand", "gelu") else 64)
        assert float(stats["min"]) <= float(stats["mean"]) <= float(stats["max"])
        assert len(data) == (2 if stage == "att" else 1)


def test_parameters_equal_the_models_numel_and_the_books_124m(client):
    from llm.config import PRESETS

    summary, table, sizes, numbers = client.predict(MODEL, api_name="/model_parameters")
    assert numbers["total"] == PRESETS[MODEL].num_parameters() == 6_536_704
    assert numbers["total_tied"] == PRESETS[MODEL].num_parameters(tied_head=True)
    assert sum(numbers["components"].values()) == numbers["total"]
    assert numbers["memory_mb"]["float32"] == pytest.approx(6_536_704 * 4 / 2**20, abs=1e-3)
    assert numbers["gpt2_sizes"]["GPT_CONFIG_124M (book)"] == {"untied": 163_009_536, "tied": 124_412_160}
    assert list(numbers["gpt2_sizes"]) == ["GPT_CONFIG_124M (book)", "gpt2-small", "gpt2-medium", "gpt2-large",
                                           "gpt2-xl"]
    assert rows(table)[-1][2] == "6,536,704" and "separate" in summary
    size_rows = {r[0]: r[1:] for r in rows(sizes)}
    assert size_rows["total, separate head"][0] == "163,009,536"
    assert size_rows["total, tied head"][0] == "124,412,160"
    assert size_rows["float32 MB, tied"][0] == "474.6"


def test_layer_norm_view_normalizes_each_token(client):
    figure, summary = client.predict(MODEL, TEXT, 0, api_name="/model_layernorm")
    traces = {(t["name"], t.get("xaxis", "x")): t for t in plot_data(figure)}
    normalized_var = as_array(traces[("(x − mean) / √(var + eps)", "x2")]["y"])
    assert len(normalized_var) == 4 and np.allclose(normalized_var, 1.0, atol=1e-3)
    assert "about 1" in summary and "scale" in summary


def test_gelu_view_reports_the_negative_share(client):
    figure, summary = client.predict(MODEL, TEXT, 1, api_name="/model_gelu")
    assert [t["name"] for t in plot_data(figure)][:2] == ["GELU", "ReLU"]
    assert "1,024 activations" in summary and "are negative" in summary


def test_shortcut_experiment_shows_the_vanishing_gradient(client):
    _, summary, numbers = client.predict(5, 123, api_name="/model_shortcut")
    without, with_ = list(numbers["without"].values()), list(numbers["with"].values())
    assert without[-1] >= 10 * without[0] and with_[-1] < 10 * with_[0]
    assert without[0] == pytest.approx(0.0002017, rel=1e-3)  # the book's printed value
    assert "25.0×" in summary and "6.0×" in summary


def test_residual_stream_norms_per_block_and_token(client):
    _, numbers = client.predict(MODEL, TEXT, api_name="/model_residual")
    assert numbers["rows"] == ["embeddings", "trf_blocks[0]", "trf_blocks[1]"]
    norms = np.array(numbers["norms"])
    assert norms.shape == (3, 4) and (norms > 0).all() and (norms < 1e4).all()


@pytest.mark.parametrize("args, message", [
    ((MODEL, "", 0, 0, "att"), "text is empty"),
    ((MODEL, TEXT, 2, 0, "att"), "2 transformer blocks: pick a block from 0 to 1"),
    ((MODEL, TEXT, 0, 4, "att"), "4 tokens: pick a token from 0 to 3"),
    ((MODEL, TEXT, 0, 0, "attention please"), "not in the list of choices: \\['ids', 'tok_emb'"),  # Gradio checks
])
def test_bad_input_gets_a_sentence(client, args, message):
    with pytest.raises(AppError, match=message):
        client.predict(*args, api_name="/model_stage")


def test_text_longer_than_the_view_is_cut_with_a_notice(client):
    status, _, shapes, _ = client.predict(MODEL, "word " * 300, 0, 0, "att", api_name="/model_flow")
    assert "only the first 64" in status and shapes[0]["shape"] == [1, 64]


def test_a_one_token_text_works_and_token_1_is_a_sentence(client):
    status, _, shapes, _ = client.predict(MODEL, "Hi", 0, 63, "att", api_name="/model_flow")
    assert "1 token ·" in status and shapes[0]["shape"] == [1, 1]
    _, table = client.predict(MODEL, "Hi", 1, 0, "next", api_name="/model_stage")
    assert len(rows(table)) == 10
    with pytest.raises(AppError, match="The text has 1 token: pick token 0"):
        client.predict(MODEL, "Hi", 0, 1, "att", api_name="/model_stage")


def test_a_classifier_checkpoint_has_a_two_class_head(client, tmp_path, tiny_cfg):
    from llm.checkpoints import build_model, save_checkpoint

    model = build_model(tiny_cfg, "classifier", 2)
    key = upload(client, save_checkpoint(tmp_path / "spam.safetensors", model, task="classifier",
                                         labels=["ham", "spam"]))
    _, html, shapes, _ = client.predict(key, TEXT, 0, 0, "next", api_name="/model_flow")
    assert shapes[-2]["shape"] == [1, 4, 2] and shapes[-1]["shape"] == [1, 2]
    assert "class probabilities" in html
    _, table = client.predict(key, TEXT, 0, 0, "next", api_name="/model_stage")
    assert sorted(r[1] for r in rows(table)) == ["ham", "spam"]
    assert sum(r[4] for r in rows(table)) == pytest.approx(1.0, abs=1e-4)
    summary, _, _, numbers = client.predict(key, api_name="/model_parameters")
    assert numbers["total"] == sum(p.numel() for p in model.parameters()) and numbers["total_tied"] is None
    assert "weight tying does not apply" in summary


# --- in a real browser (Debian's chromium through Playwright), with screenshots ---------------

def test_browser_model_tab(lab_url, open_page):
    page = open_page(lab_url, height=1000, timeout_ms=60_000)
    page.get_by_role("tab", name="Model").click()
    page.fill("#mdl-text textarea", "Every effort moves you forward, one step at a time.")
    page.click("#mdl-run")
    page.wait_for_selector("#mdl-flow .gpt-flow")
    page.wait_for_selector("#mdl-stage-plot .js-plotly-plot")
    page.wait_for_selector("#mdl-residual .js-plotly-plot")
    page.wait_for_selector("#mdl-shortcut .js-plotly-plot")
    page.wait_for_function("document.querySelector('#mdl-params').innerText.includes('sum(p.numel()')")
    assert page.locator("#mdl-flow .st").count() == 15
    assert "trf_blocks[0].att" in page.inner_text("#mdl-flow")
    assert "163,009,536" in page.inner_text("#mdl-sizes")
    screenshot(page, "model", full_page=True)
    page.get_by_label("14 out_head").check()
    page.wait_for_function("document.querySelector('#mdl-stage-plot').innerText.includes('largest')")
    assert page.locator("#mdl-flow .st.sel").inner_text().startswith("14")
    screenshot(page.locator("#mdl-flow").locator(".."), "model-flow-out-head")

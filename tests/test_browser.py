"""The Tokenize, Embeddings, Attention and Generate tabs in a real headless Chromium.

Debian's chromium driven by Playwright (no `playwright install`); screenshots go to
tests/artifacts/screenshots/<tab>.png for a person to look at.
"""
import pytest

from conftest import screenshot


@pytest.fixture(scope="module")
def page(lab_url, browser):
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    page.set_default_timeout(60_000)
    page.goto(lab_url, wait_until="load")
    page.wait_for_selector("#model-picker")
    page.wait_for_function("document.querySelector('#lab-status').innerText.includes('models available')")
    yield page
    page.close()


def open_tab(page, title: str) -> None:
    page.get_by_role("tab", name=title).click()


def shot(page, name: str) -> None:
    screenshot(page, name, full_page=True)


def test_status_line_shows_models_device_and_threads(page):
    status = page.inner_text("#lab-status")
    assert "models available" in status and "device:" in status and "torch threads" in status


def test_tokenize_tab(page):
    open_tab(page, "Tokenize")
    page.fill("#tok-text textarea", "Hello, world 🤖\nIn the sunlit terraces of someunknownPlace.")
    page.click("#tok-run")
    page.wait_for_function("document.querySelector('#tok-status').innerText.includes('GPT-2 tokens')")
    chips = page.locator("#tok-chips .tok")
    assert chips.count() > 20
    assert page.locator("#tok-chips .tok.partial").count() >= 2  # the emoji's byte pieces
    assert page.locator("#tok-chips .tok.unk").count() >= 1  # <|unk|> of the simple tokenizer
    assert "↵" in page.inner_text("#tok-chips")
    page.click("#win-run")
    page.wait_for_function("document.querySelector('#win-status').innerText.includes('input/target pairs')")
    shot(page, "tokenize")


def test_embeddings_tab(page):
    open_tab(page, "Embeddings")
    page.click("#emb-run")
    page.wait_for_selector("#emb-pca .js-plotly-plot")
    page.wait_for_selector("#emb-heatmaps .js-plotly-plot")
    assert "random" not in page.inner_text("#emb-status")  # the page opens on the trained Wharton GPT
    page.click("#nn-run")
    page.wait_for_function("document.querySelector('#nn-status').innerText.includes('Nearest neighbours')")
    shot(page, "embeddings")


def test_attention_tab(page):
    open_tab(page, "Attention")
    page.click("#att-run")
    page.wait_for_selector("#att-heatmap .js-plotly-plot")
    page.wait_for_selector("#att-steps .js-plotly-plot")
    page.wait_for_selector("#lens-plot .js-plotly-plot")
    assert "layers" in page.inner_text("#att-status")
    shot(page, "attention")
    page.get_by_label("all heads of the layer").check()
    page.wait_for_function("document.querySelector('#att-heatmap').innerText.includes('head 3')")
    shot(page, "attention-all-heads")


def test_generate_tab(page):
    open_tab(page, "Generate")
    page.get_by_label("colour tokens by probability").check()
    page.fill("#gen-temperature input", "0.8")
    page.click("#gen-run")
    page.wait_for_function("document.querySelector('#gen-stats').innerText.includes('done')")
    assert "tokens/s" in page.inner_text("#gen-stats")
    page.wait_for_selector("#dist-plot .js-plotly-plot")
    assert page.locator("#gen-output .generated span[title^='p = ']").count() == 30
    page.click("#gen-compare")
    page.wait_for_function("document.querySelector('#gen-cache-report').innerText.includes('with KV cache')")
    shot(page, "generate")

"""Shared fixtures. No test touches the network: the Hub is forced offline here."""
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

import pytest
import torch

from llm.config import GPTConfig


@pytest.fixture
def tiny_cfg() -> GPTConfig:
    """A GPT small enough to run in milliseconds, with the real GPT-2 vocabulary."""
    return GPTConfig(vocab_size=50257, context_length=32, emb_dim=32, n_heads=4, n_layers=2,
                     drop_rate=0.0, qkv_bias=True)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(123)


# --- the whole lab app, launched once per test session (API and browser tests) -------

def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def lab_url(tmp_path_factory):
    """URL of the full lab (`llm.ui.app.build_app()`) served on a free local port.

    Checkpoints go to a temporary folder so the tests neither see nor leave user files.
    """
    os.environ.setdefault("LLM_LAB_CHECKPOINTS", str(tmp_path_factory.mktemp("checkpoints")))
    yield from _serve_lab()


@pytest.fixture
def own_lab_url(lab_url):
    """A second lab of the test's own, for a long browser run that must not queue behind jobs other
    tests left running in the shared one (the judge's, the training tabs')."""
    yield from _serve_lab()


def _serve_lab():
    from llm.ui.app import build_app, launch_kwargs

    demo = build_app()
    _, url, _ = demo.launch(server_name="127.0.0.1", server_port=_free_port(), prevent_thread_lock=True,
                            quiet=True, **launch_kwargs())
    yield url
    demo.close()


# --- a real browser: Debian's Chromium driven by Playwright (never `playwright install`) ---

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--no-first-run"]
#: Where the browser tests save their screenshots (the README's come from here).
SCREENSHOTS = os.path.join(os.path.dirname(__file__), "artifacts", "screenshots")


@pytest.fixture(scope="session")
def browser():
    """One headless Chromium for the whole run; the browser tests are skipped when it is missing."""
    if not os.path.exists(CHROMIUM):
        pytest.skip(f"Debian's chromium is not installed at {CHROMIUM} (apt-get install -y chromium)")
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture
def open_page(browser):
    """`open_page(url, height=1000, timeout_ms=120_000, lab=True)`: a new page on the app.

    With `lab`, it waits until the lab's status line lists the models (the page has loaded
    the catalog). The page closes at the end of the test.
    """
    pages = []

    def _open(url, height=1000, timeout_ms=120_000, lab=True):
        page = browser.new_page(viewport={"width": 1280, "height": height})
        pages.append(page)
        page.set_default_timeout(timeout_ms)
        page.goto(url, wait_until="load")
        if lab:
            page.wait_for_function("(document.querySelector('#lab-status') || {innerText: ''}).innerText"
                                   ".includes('models available')")
        return page

    yield _open
    for page in pages:
        page.close()


def screenshot(target, name: str, **options) -> None:
    """Save a page's (or a locator's) screenshot as tests/artifacts/screenshots/<name>.png."""
    os.makedirs(SCREENSHOTS, exist_ok=True)
    target.screenshot(path=os.path.join(SCREENSHOTS, f"{name}.png"), **options)

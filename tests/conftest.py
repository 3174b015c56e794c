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
    from llm.ui.app import build_app, launch_kwargs

    demo = build_app()
    _, url, _ = demo.launch(server_name="127.0.0.1", server_port=_free_port(), prevent_thread_lock=True,
                            quiet=True, **launch_kwargs())
    yield url
    demo.close()

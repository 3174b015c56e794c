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

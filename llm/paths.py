"""Where the lab keeps its files: bundled assets and the user's checkpoints."""
from __future__ import annotations

import os
from pathlib import Path

ROOT_DIR = Path(__file__).resolve().parent.parent
ASSETS_DIR = ROOT_DIR / "assets"


def checkpoints_dir() -> Path:
    """Folder scanned for local checkpoints (env `LLM_LAB_CHECKPOINTS`, default ./checkpoints)."""
    return Path(os.environ.get("LLM_LAB_CHECKPOINTS", ROOT_DIR / "checkpoints"))

#: The lab-trained model that ships with the app (`python -m llm pretrain --preset wharton`).
BUNDLED_MODEL = ASSETS_DIR / "models" / "wharton-gpt.safetensors"
BUNDLED_KEY = "wharton-gpt"


def cached_hub_file(repo: str, filename: str, manual: Path) -> Path | None:
    """A Hub file in the Hugging Face cache, or placed by hand at `manual`; never the network."""
    from huggingface_hub import try_to_load_from_cache

    found = try_to_load_from_cache(repo, filename)
    if isinstance(found, str) and os.path.isfile(found):
        return Path(found)
    return manual if manual.is_file() else None


def default_model_key() -> str:
    """The model a new page opens with: GPT-2 small where its weights are on this machine,
    else the bundled Wharton GPT, else the tiny random preset. Torch-free (start-up)."""
    if cached_hub_file("openai-community/gpt2", "model.safetensors",
                       checkpoints_dir() / "gpt2-small" / "model.safetensors"):
        return "gpt2-small"
    return BUNDLED_KEY if BUNDLED_MODEL.is_file() else "lab-tiny"

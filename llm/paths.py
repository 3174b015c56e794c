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

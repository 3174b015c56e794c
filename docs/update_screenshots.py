"""Copy the browser tests' screenshots that the README shows into docs/screenshots/.

Run the tests first (`python -m pytest -q tests/test_browser.py tests/test_*_ui.py`): they save
every tab to tests/artifacts/screenshots/. The copies are reduced to a 256-colour palette
(the pages are flat colours and text), which keeps them a third of the size.

    python docs/update_screenshots.py
"""
from pathlib import Path

from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
SOURCE = ROOT / "tests" / "artifacts" / "screenshots"
TARGET = ROOT / "docs" / "screenshots"
SHOWN = ["tokenize", "embeddings", "attention", "generate", "pretrain-running", "pretrain-stopped",
         "classify-running", "classify-finetune", "classify-explain", "instruct-finetune", "instruct", "judge"]


def main() -> None:
    missing = [name for name in SHOWN if not (SOURCE / f"{name}.png").exists()]
    if missing:
        raise SystemExit(f"run the browser tests first: no screenshot of {', '.join(missing)} in {SOURCE}")
    TARGET.mkdir(parents=True, exist_ok=True)
    for name in SHOWN:
        image = Image.open(SOURCE / f"{name}.png").convert("RGB")
        image.quantize(colors=256, method=Image.Quantize.MEDIANCUT).save(TARGET / f"{name}.png", optimize=True)
        print(f"{name}.png: {(TARGET / f'{name}.png').stat().st_size / 1024:.0f} KB")


if __name__ == "__main__":
    main()

"""How much one visitor may start: generous on a laptop, bounded on a shared Hugging Face Space.

On Spaces (`SYSTEM=spaces`, CPU Basic: 2 vCPU, 16 GB shared by every visitor) a single
visitor training GPT-2 medium would stop the Space for everyone, so training there is
limited to small models, a bounded number of steps and wall time, one job at a time, and a
short queue. Locally the limits only stop mistakes (a typo of 10^9 steps).

`LLM_LAB_LIMITS=spaces|local` forces one set (to try the Space's limits on a laptop);
`current()` reads the environment each call so tests can switch it.
"""
from __future__ import annotations

import os
from dataclasses import dataclass


@dataclass(frozen=True)
class Limits:
    name: str
    max_train_parameters: int   # the largest model a visitor may train (or fine-tune)
    max_train_steps: int        # optimizer steps in one run
    max_train_seconds: float    # wall time of one run; the run stops and saves when it is reached
    training_concurrency: int   # training runs at once, per training event, for the whole app
    queue_size: int | None      # visitors waiting in the queue before new ones are turned away
    max_new_tokens: int         # generation length
    max_model_parameters: int   # the largest model anyone may load (memory shared by all visitors)
    max_upload_bytes: int       # the largest file a visitor may upload (LLM_LAB_MAX_UPLOAD_MB overrides)

    @property
    def upload_bytes(self) -> int:
        """The upload limit in force: LLM_LAB_MAX_UPLOAD_MB when set (1 MB to 100 GB), else this set's."""
        raw = os.environ.get("LLM_LAB_MAX_UPLOAD_MB", "").strip()
        if not raw:
            return self.max_upload_bytes
        try:
            mb = float(raw)
        except ValueError:
            raise ValueError(f"LLM_LAB_MAX_UPLOAD_MB must be a number of megabytes (got {raw!r})") from None
        if not 1 <= mb <= 100_000:
            raise ValueError(f"LLM_LAB_MAX_UPLOAD_MB must be between 1 and 100000 (got {raw})")
        return int(mb * 1_000_000)

    def describe(self) -> str:
        """One Markdown sentence for the UI."""
        if self.name == "local":
            return ""
        return (f"🛈 **Shared Space limits:** training up to {self.max_train_parameters / 1e6:.0f}M parameters, "
                f"{self.max_train_steps:,} steps and {self.max_train_seconds / 60:.0f} minutes per run, "
                f"{self.training_concurrency} run at a time (others wait in the queue). "
                f"Models up to {self.max_model_parameters / 1e6:.0f}M parameters; generation up to "
                f"{self.max_new_tokens} tokens. Run the lab locally (`python app.py`) for bigger experiments.")

    def check_training(self, num_parameters: int, total_steps: int) -> None:
        """Raise ValueError with a clear message when a training run is beyond these limits."""
        if num_parameters > self.max_train_parameters:
            raise ValueError(f"This model has {num_parameters / 1e6:.1f}M parameters; training here is limited to "
                             f"{self.max_train_parameters / 1e6:.0f}M. Pick a smaller model or run the lab locally.")
        if total_steps > self.max_train_steps:
            raise ValueError(f"This run would take {total_steps:,} steps; the limit here is "
                             f"{self.max_train_steps:,}. Use fewer epochs or a larger batch.")


LOCAL = Limits("local", max_train_parameters=800_000_000, max_train_steps=1_000_000,
               max_train_seconds=24 * 3600, training_concurrency=1, queue_size=None, max_new_tokens=1024,
               max_model_parameters=10**12, max_upload_bytes=8_000_000_000)
SPACES = Limits("spaces", max_train_parameters=130_000_000, max_train_steps=3_000,
                max_train_seconds=10 * 60, training_concurrency=1, queue_size=16, max_new_tokens=256,
                max_model_parameters=400_000_000, max_upload_bytes=1_500_000_000)


def on_spaces() -> bool:
    """True on a Hugging Face Space (or when LLM_LAB_LIMITS=spaces)."""
    forced = os.environ.get("LLM_LAB_LIMITS", "").lower()
    if forced in ("spaces", "local"):
        return forced == "spaces"
    return os.environ.get("SYSTEM") == "spaces"


def current() -> Limits:
    """The limits that apply to this process now."""
    return SPACES if on_spaces() else LOCAL

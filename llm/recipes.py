"""Training recipes without torch: the loop's hyperparameters and each task's settings.

`TrainConfig` holds what the one loop of `llm.training` needs (section 5.2 plus
appendix D: AdamW, warm-up, cosine decay, clipping, evaluation cadence). Every task's
settings *contain* one instead of copying its fields:

    PretrainSettings (llm.config, chapter 5)   model shape, window, batch  + train: TrainConfig
    SpamSettings     (here, chapter 6)         trainable policy, data, batch + train: TrainConfig
    InstructSettings (here, chapter 7)         batch, masking              + train: TrainConfig

`settings.with_(lr=1e-3, batch_size=4)` changes fields of either level (the TrainConfig's
are routed into `train`), and reading `settings.lr` reads `settings.train.lr`.

Recipes follow the base (`spam_recipe`, `instruct_recipe`): a pretrained model (GPT-2, the
bundled model, a trained checkpoint) gets the book's gentle settings, a model with random
weights a from-scratch recipe that was measured to work (benchmarks/bench_spam.py). A small
pretrained model (under SMALL_BASE_PARAMETERS, like the bundled Wharton GPT) gets a larger
learning rate (5e-5 barely moves it) and, for spam, every layer trained.
Nothing here imports torch, so the app shows these values at start-up.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field, fields, replace

SCHEDULES = ("cosine", "constant")
#: Precisions of the training forward pass ("bf16": autocast on CUDA); generation has its own.
TRAIN_PRECISIONS = ("fp32", "bf16")

#: Upper bounds of every numeric training setting: far above any sensible run, low enough that
#: a typo (10^9 epochs) is refused with a sentence instead of running for ever.
MAX_EPOCHS = 10_000
MAX_STEPS = 10_000_000
MAX_GRAD_ACCUM = 1_024
MAX_EVAL_BATCHES = 100_000
MAX_BATCH_SIZE = 65_536
MAX_SEED = 2**63 - 1


@dataclass
class TrainConfig:
    """Hyperparameters of one training run (section 5.2 plus appendix D)."""

    lr: float = 4e-4  # peak learning rate
    weight_decay: float = 0.1
    epochs: int | None = 10  # None: max_steps decides
    max_steps: int | None = None  # stop after this many optimizer steps (None: epochs decide)
    warmup_steps: int | None = None  # linear warm-up steps; None: warmup_fraction of the run
    warmup_fraction: float = 0.0
    min_lr: float = 0.0  # where the cosine decay ends
    schedule: str = "cosine"  # "cosine" (after warm-up) or "constant" (the book's chapter 5)
    grad_clip: float | None = 1.0  # max gradient norm; None or 0: no clipping
    grad_accum: int = 1  # micro-batches per optimizer step
    eval_every: int = 5  # evaluate after step 1 and every eval_every steps
    eval_batches: int | None = 5  # batches per evaluation (None: whole loaders)
    sample_every: int | None = None  # sample at evaluations every this many steps (None: each eval)
    seed: int = 123
    precision: str = "fp32"  # "bf16": bf16 autocast for the training forward passes (CUDA only)
    embedding_lr_scale: float = 1.0  # the token embedding's lr (and so its decay) is lr times this

    def validate(self) -> "TrainConfig":
        """Raise a ValueError that says what is wrong with these settings; return self."""
        problems = []

        def whole(name, low, high, none_ok=False, words=None):
            value = getattr(self, name)
            if value is None and none_ok:
                return
            if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
                problems.append(f"{words or name.replace('_', ' ')} must be a whole number from {low:,} to "
                                f"{high:,} (got {value!r})")

        if not (isinstance(self.lr, (int, float)) and math.isfinite(self.lr) and self.lr > 0):
            problems.append(f"the learning rate must be a positive number (got {self.lr})")
        elif self.lr > 1.0:
            problems.append(f"a learning rate of {self.lr} is far too large for AdamW (use at most 1)")
        if not (isinstance(self.min_lr, (int, float)) and 0 <= self.min_lr <= (self.lr if self.lr > 0 else 0)):
            problems.append(f"min_lr must be between 0 and the learning rate {self.lr} (got {self.min_lr})")
        if not (isinstance(self.weight_decay, (int, float)) and 0 <= self.weight_decay < 10):
            problems.append(f"weight decay must be between 0 and 10 (got {self.weight_decay})")
        if not (isinstance(self.embedding_lr_scale, (int, float)) and 0 < self.embedding_lr_scale <= 1000):
            problems.append(f"the embedding lr scale must be above 0 and at most 1,000 (got {self.embedding_lr_scale})")
        if self.epochs is None and self.max_steps is None:
            problems.append("give a number of epochs or a maximum number of steps")
        whole("epochs", 1, MAX_EPOCHS, none_ok=True)
        whole("max_steps", 1, MAX_STEPS, none_ok=True)
        whole("warmup_steps", 0, MAX_STEPS, none_ok=True)
        if not (isinstance(self.warmup_fraction, (int, float)) and 0 <= self.warmup_fraction < 1):
            problems.append(f"the warm-up fraction must be in [0, 1) (got {self.warmup_fraction})")
        if self.schedule not in SCHEDULES:
            problems.append(f"schedule must be one of {', '.join(SCHEDULES)} (got {self.schedule!r})")
        if self.grad_clip is not None and not (isinstance(self.grad_clip, (int, float)) and 0 <= self.grad_clip <= 1e6):
            problems.append(f"the gradient clipping norm must be between 0 and 1,000,000 (got {self.grad_clip})")
        whole("grad_accum", 1, MAX_GRAD_ACCUM, words="gradient accumulation (micro-batches per step)")
        whole("eval_every", 1, MAX_STEPS, words="eval_every (steps between evaluations)")
        whole("eval_batches", 1, MAX_EVAL_BATCHES, none_ok=True)
        whole("sample_every", 1, MAX_STEPS, none_ok=True)
        whole("seed", 0, MAX_SEED)
        if self.precision not in TRAIN_PRECISIONS:
            problems.append(f"precision must be one of {', '.join(TRAIN_PRECISIONS)} (got {self.precision!r})")
        if problems:
            raise ValueError("; ".join(problems))
        return self

    def total_steps(self, steps_per_epoch: int | None) -> int:
        """Optimizer steps in the whole run: epochs x steps per epoch, capped by max_steps."""
        by_epochs = self.epochs * steps_per_epoch if self.epochs is not None and steps_per_epoch else None
        if by_epochs is None and self.max_steps is None:
            raise ValueError("the training data has no length: give max_steps")
        return min(s for s in (by_epochs, self.max_steps) if s is not None)

    def warmup(self, total_steps: int) -> int:
        if self.warmup_steps is not None:
            return int(self.warmup_steps)
        return int(round(self.warmup_fraction * total_steps))


TRAIN_FIELDS = tuple(f.name for f in fields(TrainConfig))


class ContainsTrainConfig:
    """Settings of a task that contain a `TrainConfig` as `train` (a mixin for frozen dataclasses).

    `with_(**changes)` routes the TrainConfig's field names into `train` (None values mean "not
    given" and are ignored, except epochs=None next to a max_steps: then the steps decide);
    reading one of them on the settings reads it from `train`.
    """

    def with_(self, **changes):
        steps_decide = "epochs" in changes and changes["epochs"] is None and changes.get("max_steps") is not None
        changes = {k: v for k, v in changes.items() if v is not None}
        own = {k: v for k, v in changes.items() if k not in TRAIN_FIELDS}
        train = {k: v for k, v in changes.items() if k in TRAIN_FIELDS}
        unknown = set(own) - {f.name for f in fields(self)}
        if unknown:
            raise ValueError(f"unknown setting(s): {', '.join(sorted(unknown))}")
        if steps_decide:
            train["epochs"] = None
        if train:
            own["train"] = replace(self.train, **train)
        return replace(self, **own)

    def __getattr__(self, name):
        if name in TRAIN_FIELDS:
            return getattr(self.train, name)
        raise AttributeError(f"{type(self).__name__} has no setting {name!r}")

    def changes_from(self, recipe) -> str:
        """The settings that differ from `recipe`, as 'lr 5e-05, policy last-block' ('' when none);
        settings this run does not use (`unused`) are left out."""
        mine, theirs = self.to_dict(), recipe.to_dict()
        mine.update(mine.pop("train"))
        theirs.update(theirs.pop("train"))
        skip = {"note", *self.unused()}
        return ", ".join(f"{k} {v:g}" if isinstance(v, float) else f"{k} {v}"
                         for k, v in mine.items() if k not in skip and v != theirs.get(k))

    def unused(self) -> set[str]:
        """Names of settings that do not change this run (none by default)."""
        return set()

    def to_dict(self) -> dict:
        """JSON-able, with the TrainConfig nested under "train" (as saved in checkpoints)."""
        from dataclasses import asdict

        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict):
        """Settings saved by `to_dict`, or the older flat form with the TrainConfig's fields at the top."""
        d = dict(d)
        train = dict(d.pop("train", None) or {})
        train.update({k: d.pop(k) for k in list(d) if k in TRAIN_FIELDS})
        own = {f.name: d[f.name] for f in fields(cls) if f.name in d and f.name != "train"}
        return cls(**own, train=TrainConfig(**train))


def check_whole(value, name: str, low: int, high: int) -> None:
    """Raise a ValueError unless `value` is a whole number in [low, high]."""
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ValueError(f"{name} must be a whole number from {low:,} to {high:,} (got {value!r})")


# ---------------------------------------------------------------- chapter 6

POLICIES = ("last-block", "head", "last-k", "all", "lora")


@dataclass(frozen=True)
class SpamSettings(ContainsTrainConfig):
    """A spam fine-tuning run (section 6.7): what trains, on which data, in which batches."""

    train: TrainConfig
    policy: str = "last-block"  # see llm.classifier.set_trainable
    k: int = 2  # blocks trained with policy "last-k"
    rank: int = 16  # LoRA rank (appendix E)
    alpha: float = 16  # LoRA alpha
    balanced: bool = True  # the book's balanced data (747 ham + 747 spam)
    batch_size: int = 8
    drop_rate: float | None = None  # dropout while fine-tuning (None: the base model's own)
    note: str = ""

    def unused(self) -> set[str]:
        """k counts only for policy last-k, rank and alpha only for lora."""
        return ({"k"} if self.policy != "last-k" else set()) | ({"rank", "alpha"} if self.policy != "lora" else set())

    def validate(self) -> "SpamSettings":
        if self.policy not in POLICIES:
            raise ValueError(f"unknown trainable policy {self.policy!r}; choose one of: {', '.join(POLICIES)}")
        check_whole(self.k, "k", 1, 1000)
        check_whole(self.rank, "the LoRA rank", 1, 4096)
        if not (isinstance(self.alpha, (int, float)) and 0 < self.alpha <= 4096):
            raise ValueError(f"LoRA alpha must be between 0 and 4,096 (got {self.alpha})")
        check_whole(self.batch_size, "the batch size", 1, MAX_BATCH_SIZE)
        if self.drop_rate is not None and not 0 <= self.drop_rate < 1:
            raise ValueError(f"the dropout rate must be in [0, 1) (got {self.drop_rate})")
        self.train.validate()
        return self


#: Section 6.7's run, for a pretrained base: AdamW lr 5e-5, weight decay 0.1, 5 epochs, batch 8,
#: the last block + final norm + head trained, evaluation every 50 steps over 5 batches.
SPAM_BOOK = SpamSettings(
    TrainConfig(lr=5e-5, weight_decay=0.1, epochs=5, warmup_steps=0, schedule="constant", grad_clip=None,
                eval_every=50, eval_batches=5),
    note="the book's recipe (section 6.7) for a pretrained base: the last block, final norm and head train "
         "at lr 5e-5 for 5 epochs")
#: Measured from random weights (benchmarks/bench_spam.py): every layer trains, a 40x larger lr with a
#: cosine decay, clipping, dropout 0.2 and 8 epochs reach >= 95 % test accuracy on the balanced data.
SPAM_SCRATCH = SpamSettings(
    TrainConfig(lr=2e-3, weight_decay=0.1, epochs=8, warmup_steps=0, schedule="cosine", grad_clip=1.0,
                eval_every=50, eval_batches=5),
    policy="all", drop_rate=0.2,
    note="a from-scratch recipe for random weights (measured: >= 95 % test accuracy on lab-tiny): every layer "
         "trains at lr 2e-3, cosine decay, clipping, dropout 0.2, 8 epochs")


# ---------------------------------------------------------------- chapter 7

@dataclass(frozen=True)
class InstructSettings(ContainsTrainConfig):
    """An instruction fine-tuning run (section 7.6)."""

    train: TrainConfig
    batch_size: int = 8
    mask_instructions: bool = False  # exercise 7.2: the instruction is left out of the loss
    allowed_max_length: int | None = None  # sequences cut here (None: the model's context)
    sample_tokens: int = 50
    note: str = ""

    def validate(self) -> "InstructSettings":
        check_whole(self.batch_size, "the batch size", 1, MAX_BATCH_SIZE)
        if self.allowed_max_length is not None:
            check_whole(self.allowed_max_length, "the maximum length", 2, 1_000_000)
        check_whole(self.sample_tokens, "sample tokens", 1, 4096)
        self.train.validate()
        return self


#: The book's chapter-7 run (section 7.6): AdamW at a constant lr 5e-5, no clipping, 2 epochs of
#: batch 8, evaluation on 5 batches every 5 steps (`train_model_simple(..., eval_freq=5, eval_iter=5)`).
INSTRUCT_BOOK = InstructSettings(
    TrainConfig(lr=5e-5, weight_decay=0.1, epochs=2, warmup_steps=0, schedule="constant", grad_clip=None,
                eval_every=5, eval_batches=5),
    note="the book's recipe (section 7.6) for a pretrained base: lr 5e-5, constant, 2 epochs")
#: From random weights a model can learn the answer format (not the knowledge): a 20x larger lr with
#: a short warm-up, cosine decay and clipping.
INSTRUCT_SCRATCH = InstructSettings(
    TrainConfig(lr=1e-3, weight_decay=0.1, epochs=2, warmup_fraction=0.05, min_lr=1e-4, schedule="cosine",
                grad_clip=1.0, eval_every=10, eval_batches=5),
    note="a from-scratch recipe for random weights: lr 1e-3 with warm-up and cosine decay, clipping; it learns "
         "the answer format, not the knowledge")


#: A pretrained base with fewer parameters than this (the lab's own models; GPT-2 small has 124M)
#: gets SPAM_SMALL / INSTRUCT_SMALL.
SMALL_BASE_PARAMETERS = 50_000_000
#: Measured on the bundled Wharton GPT (balanced data, test accuracy, seed 123): the book's last-block
#: recipe reaches 84.7 % at lr 5e-5 and 89.7 % at 1e-3, and a random model of the same shape 85.3 / 90.0 %
#: (benchmarks/bench_spam.py --base wharton-gpt): the frozen blocks, trained on fiction only, do not
#: carry what sets spam apart, and 25,721 of GPT-2's 50,257 tokens (22 % of the spam messages' tokens, and
#: <|endoftext|>, the pad) never occur in Wharton's fiction, so pretraining left them only a trace of their
#: random start (norm 0.14 against 2.7 for the corpus's words). So every layer trains, embeddings included,
#: and the embeddings learn 10x faster, as in the base's pretraining (`SETTINGS["wharton"]`).
#: All layers at lr 1e-3 (embeddings 1e-2), batch 16, 2 epochs (130 steps, about 30 s on 2 threads), seeds
#: 123 / 1 / 2 / 3 / 4 / 5: 95.7 / 95.3 / 97.0 / 97.3 / 96.0 / 96.3 %. Without the faster embeddings (lr 2e-3):
#: 93.3 / 96.7 / 97.3 / 95.7 / 92.0 / 92.0 %.
SPAM_SMALL = SPAM_BOOK.with_(
    policy="all", lr=1e-3, batch_size=16, epochs=2, embedding_lr_scale=10,
    note="for a small pretrained base: every layer trains at lr 1e-3, the token embeddings 10x faster (words "
         "of text messages that its pretraining text never had start near zero), batch 16, 2 epochs")
#: Measured on the bundled Wharton GPT (14.1M parameters, 2 epochs, 232 steps, about 2 minutes on 2 cores):
#: at lr 1e-3 its replies are English and end cleanly (validation loss 1.78), where a random model of the
#: same shape under the same recipe reaches 2.26 and repeats itself. (On the tied model it replaced, the
#: book's lr 5e-5 left replies that repeat themselves: 3.70.)
INSTRUCT_SMALL = INSTRUCT_BOOK.with_(
    lr=1e-3, note="the book's recipe (section 7.6) at lr 1e-3 for a small pretrained base: constant, 2 epochs")


def is_random_base(key: str | None, kind: str | None = None) -> bool:
    """True for a base with random weights: a lab preset or a '-random' GPT-2 shape.

    `kind` is the catalog's kind of the entry when known ("preset" = random weights); without it
    the key alone decides (a preset name that is not a GPT-2 size).
    """
    from .config import GPT2_SIZES, PRESETS

    key = str(key or "")
    if kind is not None:
        return kind == "preset" or key.endswith("-random")
    return (key in PRESETS and key not in GPT2_SIZES) or key.endswith("-random")


def is_small_base(parameters: int | None) -> bool:
    return parameters is not None and parameters < SMALL_BASE_PARAMETERS


def spam_recipe(random_base: bool, parameters: int | None = None) -> SpamSettings:
    """The from-scratch recipe for random weights; for a pretrained base the book's, or SPAM_SMALL
    when the base has fewer than SMALL_BASE_PARAMETERS `parameters`."""
    if random_base:
        return SPAM_SCRATCH
    return SPAM_SMALL if is_small_base(parameters) else SPAM_BOOK


def instruct_recipe(random_base: bool, parameters: int | None = None) -> InstructSettings:
    """Like `spam_recipe`, for instruction fine-tuning (chapter 7)."""
    if random_base:
        return INSTRUCT_SCRATCH
    return INSTRUCT_SMALL if is_small_base(parameters) else INSTRUCT_BOOK


def recipe_reason(random_base: bool, base_label: str, recipe) -> str:
    """One sentence: which recipe was chosen for this base, and why."""
    why = ("it has random weights, and the book's gentle settings barely move a model that knows nothing"
           if random_base else "it is pretrained, so fine-tuning starts from what it knows")
    return f"Recipe for **{base_label}**: {recipe.note} — chosen because {why}. The values stay editable."


def spam_pretraining_gain(pretrained_acc: float, random_acc: float, policy: str) -> str:
    """What pretraining bought a spam classifier (chapter 6's point): its test accuracy against a random
    model of the same shape fine-tuned with the same recipe, in points, and what no gain means."""
    points = 100 * (pretrained_acc - random_acc)
    worth = f"pretraining is worth {points:+.1f} points here"
    if points > 0:
        return worth + "."
    if policy == "all":
        return worth + (": no gain, this recipe trains every layer and the task's own data is enough to learn it "
                        "from random weights.")
    return worth + (": no gain, so the frozen layers' features are no better for this task than random ones (what "
                    "the base learned from its pretraining text does not carry what sets these messages apart). "
                    "Training every layer lets them adapt.")

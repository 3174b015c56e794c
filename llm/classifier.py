"""Classification fine-tuning (chapter 6): a GPT with a small output head that labels messages.

Section 6.5 swaps the 50,257-way output head for a `num_classes`-way one and
chooses which parameters to train; section 6.6 reads the prediction from the
last token's logits; sections 6.7-6.8 train and use the classifier. Appendix E's
LoRA adapters (in `llm.lora`) are one of the freezing policies.
"""
from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch
import torch.nn as nn

from . import distributed
from .checkpoints import Checkpoint, CheckpointError, count_parameters
from .jobs import TrainingJob
from .lora import replace_linear_with_lora
from .recipes import POLICIES, SPAM_BOOK, SpamSettings  # noqa: F401  (POLICIES re-exported)
from .spam_data import SPAM_LABELS, create_spam_dataloaders
from .training import preserved_rng
from .model import GPTModel
from .tokenizer import ENDOFTEXT_ID, text_to_token_ids, token_pieces

#: The book's pad length for its spam classifier (the longest training message, section 6.3).
BOOK_MAX_LENGTH = 120


# --- Section 6.5: head swap and freezing -------------------------------------------

def add_classification_head(model: GPTModel, num_classes: int = 2) -> GPTModel:
    """Replace `out_head` by `nn.Linear(emb_dim, num_classes)` (section 6.5), in place."""
    if num_classes < 2:
        raise ValueError(f"a classifier needs at least 2 classes (got {num_classes})")
    model.out_head = nn.Linear(model.cfg.emb_dim, num_classes).to(model.device)
    return model


def set_trainable(model: GPTModel, policy: str = "last-block", k: int = 1, rank: int = 16,
                  alpha: float = 16) -> GPTModel:
    """Freeze the model, then unfreeze what `policy` trains (section 6.5, appendix E).

    last-block: the last transformer block, the final norm and the head (the book's default)
    last-k:     the last `k` blocks, the final norm and the head
    head:       the output head only
    all:        every parameter
    lora:       rank-`rank` LoRA adapters on every Linear layer of the blocks, and the head
    """
    if policy not in POLICIES:
        raise ValueError(f"unknown trainable policy {policy!r}; choose one of: {', '.join(POLICIES)}")
    n_layers = len(model.trf_blocks)
    if policy == "last-block":
        k = 1
    if policy == "last-k" and not 1 <= k <= n_layers:
        raise ValueError(f"k must be between 1 and the model's {n_layers} blocks (got {k})")
    model.requires_grad_(policy == "all")
    if policy in ("last-block", "last-k"):
        for block in model.trf_blocks[n_layers - k:]:
            block.requires_grad_(True)
        model.final_norm.requires_grad_(True)
    elif policy == "lora":
        replace_linear_with_lora(model.trf_blocks, rank, alpha)  # new A, B train; the rest stays frozen
        model.trf_blocks.to(model.device)
    model.out_head.requires_grad_(True)
    return model


def count_trainable(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


# --- Sections 6.6-6.7: loss and accuracy from the last token -------------------------

def calc_loss_batch(input_batch, target_batch, model, device=None):
    """Cross-entropy of the last token's logits against the class labels (section 6.7)."""
    device = device or model.device
    input_batch, target_batch = input_batch.to(device), target_batch.to(device)
    logits = model(input_batch, last_only=True)[:, -1, :]
    return torch.nn.functional.cross_entropy(logits, target_batch)


def classification_loss(model, batch):
    """`calc_loss_batch` in the form the one training loop takes: (loss, number of examples)."""
    input_batch, target_batch = batch
    return calc_loss_batch(input_batch, target_batch, model), len(target_batch)


def _batches(data_loader, num_batches):
    num_batches = len(data_loader) if num_batches is None else min(num_batches, len(data_loader))
    for i, batch in enumerate(data_loader):
        if i >= num_batches:
            break
        yield batch


@torch.no_grad()
def _last_token_predictions(data_loader, model, device, num_batches):
    was_training = model.training
    model.eval()
    try:
        for input_batch, target_batch in _batches(data_loader, num_batches):
            logits = model(input_batch.to(device), last_only=True)[:, -1, :]
            yield logits, target_batch.to(device)
    finally:
        model.train(was_training)


def calc_accuracy_loader(data_loader, model, device=None, num_batches=None) -> float:
    """Share of correctly labelled examples in the first `num_batches` batches (section 6.6)."""
    correct = total = 0
    for logits, targets in _last_token_predictions(data_loader, model, device or model.device, num_batches):
        correct += (logits.argmax(dim=-1) == targets).sum().item()
        total += len(targets)
    return correct / total if total else float("nan")


def calc_loss_loader(data_loader, model, device=None, num_batches=None) -> float:
    """Mean classification loss over the first `num_batches` batches (section 6.7)."""
    losses = [torch.nn.functional.cross_entropy(logits, targets).item()
              for logits, targets in _last_token_predictions(data_loader, model, device or model.device,
                                                              num_batches)]
    return sum(losses) / len(losses) if losses else float("nan")


def confusion_matrix(data_loader, model, num_classes: int = 2, device=None) -> list[list[int]]:
    """counts[true][predicted] over the whole loader."""
    counts = torch.zeros(num_classes, num_classes, dtype=torch.long)
    for logits, targets in _last_token_predictions(data_loader, model, device or model.device, None):
        for t, p in zip(targets.tolist(), logits.argmax(dim=-1).tolist()):
            counts[t, p] += 1
    return counts.tolist()


# --- Section 6.8: using the classifier ---------------------------------------------

@dataclass
class Prediction:
    """The label of one message and the probability of every class."""

    label: str
    probs: dict[str, float]
    truncated: bool = False
    num_tokens: int = 0  # tokens in the message before truncation
    max_tokens: int = 0  # tokens the classifier read at most

    @property
    def warning(self) -> str:
        if not self.truncated:
            return ""
        return (f"The message has {self.num_tokens:,} tokens; only the first {self.max_tokens:,} "
                f"were classified.")


@dataclass
class Classifier:
    """A classifier model with its label names and the pad length it was trained with."""

    model: GPTModel
    labels: tuple[str, ...] = SPAM_LABELS
    max_length: int | None = None
    training: dict = field(default_factory=dict)


def classifier_from_checkpoint(ckpt: Checkpoint) -> Classifier:
    """Check that `ckpt` is a classifier and collect what classifying needs."""
    name = Path(ckpt.source).name if ckpt.source else "this model"
    if ckpt.task != "classifier":
        raise CheckpointError(f"{name} is not a classifier (its task is '{ckpt.task}'): fine-tune one first "
                              f"(python -m llm finetune-spam, or the Classify tab)")
    num_classes = ckpt.model.out_head.out_features
    labels = tuple(ckpt.labels) if ckpt.labels else (SPAM_LABELS if num_classes == 2 else
                                                     tuple(f"class {i}" for i in range(num_classes)))
    if len(labels) != num_classes:
        raise CheckpointError(f"{name} names {len(labels)} labels for a {num_classes}-class head")
    max_length = ckpt.training.get("max_length") or min(BOOK_MAX_LENGTH, ckpt.config.context_length)
    return Classifier(ckpt.model, labels, int(max_length), ckpt.training)


def encode_message(text: str, max_length: int | None, context_length: int) -> tuple[list[int], int]:
    """Token ids of `text` cut to what the classifier reads; also the uncut token count."""
    if not isinstance(text, str) or not text.strip():
        raise ValueError("The message is empty: type a message to classify.")
    ids = text_to_token_ids(text)
    limit = min(max_length or context_length, context_length)
    return ids[:limit], len(ids)


def _pad(rows: list[list[int]], length: int | None, pad_token_id: int = ENDOFTEXT_ID) -> torch.Tensor:
    """Right-pad every row with <|endoftext|> to `length` (or to the longest row), as in training."""
    length = length or max(len(r) for r in rows)
    return torch.tensor([r + [pad_token_id] * (length - len(r)) for r in rows], dtype=torch.long)


@torch.no_grad()
def _class_probs(model: GPTModel, rows: list[list[int]], max_length: int | None,
                 batch_size: int = 64) -> torch.Tensor:
    """Class probabilities of every row, read at its last token (section 6.6).

    With a training pad length every row is padded to it; without one, rows are
    batched only with rows of their own length so that no padding is added.
    """
    order = sorted(range(len(rows)), key=lambda i: len(rows[i])) if max_length is None else range(len(rows))
    groups, current = [], []
    for i in order:
        if current and (len(current) == batch_size or
                        (max_length is None and len(rows[i]) != len(rows[current[0]]))):
            groups.append(current)
            current = []
        current.append(i)
    groups.append(current)
    probs = torch.empty(len(rows), model.out_head.out_features)
    was_training = model.training
    model.eval()
    try:
        for group in groups:
            batch = _pad([rows[i] for i in group], max_length).to(model.device)
            probs[group] = torch.softmax(model(batch, last_only=True)[:, -1, :].float(), dim=-1).cpu()
    finally:
        model.train(was_training)
    return probs


def classify_batch(model: GPTModel, texts: list[str], max_length: int | None = None,
                   labels=SPAM_LABELS, batch_size: int = 64) -> list[Prediction]:
    """Label many messages at once; each is padded as in training and read at its last token."""
    context = model.cfg.context_length
    encoded = [encode_message(t, max_length, context) for t in texts]
    if not encoded:
        return []
    probs = _class_probs(model, [ids for ids, _ in encoded], max_length, batch_size)
    limit = min(max_length or context, context)
    return [Prediction(labels[int(p.argmax())], {lab: float(x) for lab, x in zip(labels, p)},
                       n > limit, n, limit)
            for p, (_, n) in zip(probs, encoded)]


def predict(model: GPTModel, text: str, max_length: int | None = None, labels=SPAM_LABELS) -> Prediction:
    """The book's `classify_review` (section 6.8), returning every class's probability."""
    return classify_batch(model, [text], max_length, labels)[0]


@dataclass
class OcclusionToken:
    piece: str  # the token's text
    delta: float  # P(target) with the token minus P(target) with it replaced by the neutral pad token


@dataclass
class Explanation:
    """Each token's signed contribution to the probability of the `target` class (the predicted one)."""

    target: int  # class index explained
    prob: float  # P(target) for the whole message
    tokens: list  # OcclusionToken per token read


def explain_occlusion(model: GPTModel, text: str, max_length: int | None = None, target: int | None = None,
                      batch_size: int = 64) -> Explanation:
    """How much each token supports class `target` (default: the predicted class): occlude it and look again.

    Each token in turn is replaced by `<|endoftext|>`, the neutral token the messages are padded with in
    training (section 6.3), so the message keeps its length and every other token its position; a
    token's delta is P(target) with it minus P(target) with it occluded. Positive: the token supports
    the verdict; negative: it argues against it. All variants run as batches.
    """
    ids, _ = encode_message(text, max_length, model.cfg.context_length)
    variants = [ids] + [ids[:i] + [ENDOFTEXT_ID] + ids[i + 1:] for i in range(len(ids))]
    probs = _class_probs(model, variants, max_length, batch_size)
    target = int(probs[0].argmax()) if target is None else target
    full = float(probs[0, target])
    return Explanation(target, full, [OcclusionToken(piece.text, full - float(p))
                                      for piece, p in zip(token_pieces(ids), probs[1:, target])])


# --- Messages from a file ------------------------------------------------------------

TEXT_COLUMNS = ("text", "message", "messages", "sms", "msg", "content", "body")
LABEL_COLUMNS = ("label", "labels", "class", "category", "target")


@dataclass
class MessageTable:
    texts: list[str]
    labels: list[str] | None = None  # the file's own labels, when it has a label column


def read_messages_file(source, filename: str = "") -> MessageTable:
    """Messages from a CSV or TSV file (bytes or a path) with a text column.

    The text column is found by its header (text, message, sms, ...); a headerless
    `label<TAB>text` file in the SMS Spam Collection's format also works.
    """
    if isinstance(source, (str, Path)):
        filename = filename or str(source)
        source = Path(source).read_bytes()
    try:
        content = source.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise ValueError(f"{filename or 'the file'} is not UTF-8 text") from None
    if not content.strip():
        raise ValueError(f"{filename or 'the file'} is empty")
    first_line = content.splitlines()[0]
    tsv = filename.lower().endswith(".tsv") or "\t" in first_line
    rows = [r for r in csv.reader(io.StringIO(content), delimiter="\t" if tsv else ",",
                                  quoting=csv.QUOTE_NONE if tsv else csv.QUOTE_MINIMAL) if any(c.strip() for c in r)]
    header = [c.strip().lower() for c in rows[0]]
    if len(header) == 2 and header[0] in SPAM_LABELS:  # the SMS Spam Collection itself: no header
        return MessageTable([r[1] for r in rows if len(r) > 1], [r[0] for r in rows if len(r) > 1])
    text_col = next((header.index(c) for c in TEXT_COLUMNS if c in header), None)
    if text_col is None:
        raise ValueError(f"{filename or 'the file'} has no text column: name one of its columns "
                         f"'text' or 'message' (found: {', '.join(rows[0]) or 'nothing'})")
    label_col = next((header.index(c) for c in LABEL_COLUMNS if c in header), None)
    body = [r for r in rows[1:] if len(r) > text_col and r[text_col].strip()]
    if not body:
        raise ValueError(f"{filename or 'the file'} has a text column but no messages in it")
    labels = [r[label_col] if len(r) > label_col else "" for r in body] if label_col is not None else None
    return MessageTable([r[text_col] for r in body], labels)


# --- Section 6.7: fine-tuning with the one training loop -----------------------------

class SpamFinetune(TrainingJob):
    """A spam fine-tuning job (section 6.7), in the one job shape of `llm.jobs`.

    Events: the loop's "step" and "eval" (train_loss, val_loss over `eval_batches` batches), and an
    "epoch" event at the end of every epoch with the book's train/val accuracy over as many
    batches. `finish(path)` measures train/val/test accuracy on the whole sets (and the test
    confusion matrix), merges LoRA adapters and saves a "classifier" checkpoint.
    """

    task = "classifier"
    labels = SPAM_LABELS

    def __init__(self, base, settings: SpamSettings, out=None, device: str = "cpu"):
        from .training import train

        settings.validate()
        ckpt, self.base_name = _load_base(base)
        model = ckpt.model.to(device)
        config = settings.train
        torch.manual_seed(config.seed)
        if not (ckpt.task == "classifier" and model.out_head.out_features == len(SPAM_LABELS)):
            add_classification_head(model, len(SPAM_LABELS))
        if settings.drop_rate is not None:
            for module in model.modules():
                if isinstance(module, nn.Dropout):
                    module.p = settings.drop_rate
        set_trainable(model, settings.policy, k=settings.k, rank=settings.rank, alpha=settings.alpha)
        self.model, self.settings, self.config = model, settings, config
        self.loaders = create_spam_dataloaders(model.cfg.context_length, settings.balanced, settings.batch_size,
                                               config.seed)
        self.out = _output_path(out, self.base_name, settings.policy)
        policy = settings.policy
        self.facts = self.training = {
            "base": self.base_name, "policy": policy, "k": settings.k if policy == "last-k" else None,
            "rank": settings.rank if policy == "lora" else None,
            "alpha": settings.alpha if policy == "lora" else None,
            "data": "balanced" if settings.balanced else "full", "batch_size": settings.batch_size,
            "weight_decay": config.weight_decay, "schedule": config.schedule, "drop_rate": settings.drop_rate,
            "max_length": self.loaders.max_length, "num_truncated": self.loaders.num_truncated,
            "sizes": {name: len(loader.dataset) for name, loader in
                      (("train", self.loaders.train_loader), ("val", self.loaders.val_loader),
                       ("test", self.loaders.test_loader))},
            "trainable": count_trainable(model), "parameters": count_parameters(model)}
        self.run = train(model, self.loaders.train_loader, self.loaders.val_loader, classification_loss, config)
        self._start(settings.batch_size, self.loaders.max_length, logit_positions=1)

    def accuracy(self, loader, num_batches=None) -> float:
        """Accuracy on (this rank's share of) `loader`; under torchrun the mean over the ranks."""
        with preserved_rng(loader):
            acc = calc_accuracy_loader(loader, self.model, num_batches=num_batches)
        return distributed.all_reduce_mean([acc])[0] if distributed.is_distributed() else acc

    def events(self):
        steps_per_epoch = self.run.steps_per_epoch
        for event in self.run:
            yield event
            if event.kind == "step" and event.step % steps_per_epoch == 0:
                n = self.config.eval_batches
                train_loader, val_loader = self.run.train_loader, self.run.val_loader  # the shares under torchrun
                metrics = {"train_acc": self.accuracy(train_loader, n), "val_acc": self.accuracy(val_loader, n)}
                yield replace(event, kind="epoch", metrics=metrics)

    def final_metrics(self) -> dict:
        """Accuracy on the whole train, validation and test sets, and the test confusion matrix."""
        confusion = confusion_matrix(self.loaders.test_loader, self.model, len(self.labels))
        test_acc = sum(confusion[i][i] for i in range(len(confusion))) / max(1, sum(map(sum, confusion)))
        self.facts["confusion"] = confusion
        return {"train_acc": self.accuracy(self.run.train_loader), "val_acc": self.accuracy(self.run.val_loader),
                "test_acc": test_acc, "confusion": confusion}

    def before_save(self) -> None:
        from .lora import merge_lora

        merge_lora(self.model)

    def finish(self, path=None, resumable: bool = False):
        """Measure on the whole sets, merge LoRA and save (to `out` unless `path` is given)."""
        return super().finish(path or self.out, resumable)


def finetune_spam(base, settings: SpamSettings | None = None, out=None, device: str = "cpu",
                  **changes) -> SpamFinetune:
    """Start fine-tuning `base` (a catalog key, a checkpoint path or a `Checkpoint`) into a spam classifier.

    `settings` default to the book's recipe (section 6.7, `llm.recipes.SPAM_BOOK`: AdamW lr 5e-5,
    weight decay 0.1, 5 epochs, batch 8, evaluation every 50 steps over 5 batches, the last block +
    final norm + head trained); `changes` replace fields of the settings or of their TrainConfig
    (`eval_iter`, the book's name, is `eval_batches`). See `SpamFinetune`.
    """
    if "eval_iter" in changes:
        changes["eval_batches"] = changes.pop("eval_iter")
    settings = (settings or SPAM_BOOK).with_(**changes)
    return SpamFinetune(base, settings, out, device)


def _load_base(base) -> tuple[Checkpoint, str]:
    """A private, trainable copy of the base model and a short name for it."""
    if isinstance(base, Checkpoint):
        return base, Path(base.source).stem if base.source else "model"
    from . import catalog

    ckpt = catalog.load_model(str(base), fresh=True)
    return ckpt, Path(str(base)).stem if ("/" in str(base) or "." in str(base)) else str(base)


def _output_path(out, base_name: str, policy: str) -> Path:
    """`out` itself; a spam-<base>-<policy>-<date-time>.safetensors in `out` when it is a folder,
    or in the lab's checkpoints folder when `out` is None."""
    import time

    from .paths import checkpoints_dir

    name = f"spam-{base_name}-{policy}-{time.strftime('%Y%m%d-%H%M%S')}.safetensors"
    if out is None:
        return Path(checkpoints_dir()) / name
    return Path(out) / name if Path(out).is_dir() else Path(out)

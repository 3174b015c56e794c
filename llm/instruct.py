"""Instruction fine-tuning (chapter 7): the Alpaca prompt format, the instruction
dataset and its collate function, response extraction, a chat turn, the fine-tuning job
(`finetune_instruct`, the one job shape of `llm.jobs`) and the runner that writes the answers
the judge scores.

The prompt format is the book's (section 7.2):

    Below is an instruction that describes a task. Write a response that appropriately completes the request.

    ### Instruction:
    <instruction>

    ### Input:          (only when the record has an input)
    <input>

    ### Response:
    <output>
"""
from __future__ import annotations

import json
import re
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import torch
from torch.utils.data import DataLoader, Dataset

from .alpaca import (  # noqa: F401  (the data half of chapter 7, re-exported)
    INSTRUCTION_DATA, PREAMBLE, RESPONSE_HEADER, RESPONSE_KEYS, InstructionSplits, book_splits,
    format_input, format_response, load_instruction_file, response_prompt, split_instruction_data, validate_records)
from .generation import check_sampling, stream_generate
from .jobs import TrainingJob
from .recipes import INSTRUCT_BOOK, InstructSettings
from .tokenizer import ENDOFTEXT, ENDOFTEXT_ID, get_tokenizer, token_ids_to_text

IGNORE_INDEX = -100

# A line that starts a new "### ..." section ends the response.
_HEADER_LINE = re.compile(r"(?m)^[ \t]*###")
# A tail that may be the beginning of such a header: held back while streaming.
_PARTIAL_HEADER = re.compile(r"(?:^|\n)[ \t]*#{1,3}$")


def encode(text: str) -> list[int]:
    """GPT-2 tokens of `text`; a literal "<|endoftext|>" in data or chat is ordinary text here."""
    return get_tokenizer().encode(text, disallowed_special=())


# --- Batching (section 7.3, exercise 7.2) -----------------------------------------------

class InstructionDataset(Dataset):
    """Pre-tokenized prompt + response texts (section 7.3).

    Items are token-id lists, as in the book. With `with_instruction_lengths=True`
    an item is `(instruction_length, token_ids)` as in the book's exercise 7.2, where
    `instruction_length` counts the tokens of `format_input(entry)`; the collate
    function then masks those positions out of the loss.
    """

    def __init__(self, data: list[dict], with_instruction_lengths: bool = False):
        self.data = data
        self.with_instruction_lengths = with_instruction_lengths
        self.encoded_texts = []
        self.instruction_lengths = []
        for entry in data:
            instruction_plus_input = format_input(entry)
            full = encode(instruction_plus_input + format_response(entry))
            self.encoded_texts.append(full)
            self.instruction_lengths.append(_common_prefix(encode(instruction_plus_input), full))

    def __getitem__(self, index):
        if self.with_instruction_lengths:
            return self.instruction_lengths[index], self.encoded_texts[index]
        return self.encoded_texts[index]

    def __len__(self):
        return len(self.data)


def _common_prefix(prefix: list[int], full: list[int]) -> int:
    """How many leading tokens of `full` belong to `prefix` (BPE may merge across the seam)."""
    n = 0
    for a, b in zip(prefix, full):
        if a != b:
            break
        n += 1
    return n


def custom_collate_fn(batch, pad_token_id: int = ENDOFTEXT_ID, ignore_index: int = IGNORE_INDEX,
                      allowed_max_length: int | None = None, device="cpu",
                      mask_instructions: bool = False):
    """Pad a batch of token lists into inputs and shifted targets (section 7.3).

    Every sequence gets one `<|endoftext|>` and is padded to the longest + 1; inputs
    drop the last position, targets the first. In the targets every padding token
    after the first becomes `ignore_index`, and with `mask_instructions` (exercise
    7.2; items are `(instruction_length, ids)`) so do the positions that predict the
    instruction part. Both are finally truncated to `allowed_max_length`.
    """
    if not batch:
        raise ValueError("cannot collate an empty batch")
    items = [item if isinstance(item, tuple) else (None, item) for item in batch]
    if mask_instructions and any(length is None for length, _ in items):
        raise ValueError("mask_instructions needs items of the form (instruction_length, token_ids); "
                         "build the dataset with with_instruction_lengths=True")
    batch_max_length = max(len(ids) + 1 for _, ids in items)
    inputs_lst, targets_lst = [], []
    for instruction_length, ids in items:
        new_item = list(ids) + [pad_token_id]
        padded = new_item + [pad_token_id] * (batch_max_length - len(new_item))
        inputs = torch.tensor(padded[:-1])
        targets = torch.tensor(padded[1:])
        # The first pad (the end-of-text the model must learn) sits at targets[len(ids) - 1];
        # the book finds it by value, which equals this unless the text itself has token 50256.
        targets[len(ids):] = ignore_index
        if mask_instructions:
            targets[:instruction_length - 1] = ignore_index
        if allowed_max_length is not None:
            inputs = inputs[:allowed_max_length]
            targets = targets[:allowed_max_length]
        inputs_lst.append(inputs)
        targets_lst.append(targets)
    return torch.stack(inputs_lst).to(device), torch.stack(targets_lst).to(device)


def instruction_collate(allowed_max_length: int | None = None, mask_instructions: bool = False,
                        device="cpu"):
    """`custom_collate_fn` with its options fixed, for a DataLoader (the book uses functools.partial)."""
    def collate(batch):
        return custom_collate_fn(batch, allowed_max_length=allowed_max_length, device=device,
                                 mask_instructions=mask_instructions)
    return collate


def create_instruction_dataloader(data: list[dict], batch_size: int = 8, shuffle: bool = False,
                                  drop_last: bool = False, allowed_max_length: int | None = None,
                                  mask_instructions: bool = False,
                                  generator: torch.Generator | None = None) -> DataLoader:
    """A DataLoader over instruction records as in section 7.4 (train: shuffle and drop_last)."""
    dataset = InstructionDataset(data, with_instruction_lengths=mask_instructions)
    return DataLoader(dataset, batch_size=batch_size, shuffle=shuffle, drop_last=drop_last,
                      collate_fn=instruction_collate(allowed_max_length, mask_instructions),
                      generator=generator, num_workers=0)


# --- Responses (sections 7.5 and 7.7) ---------------------------------------------------

def _cut_at_header(text: str) -> tuple[str, bool]:
    """Text up to the next "### ..." header line, and whether one was found."""
    match = _HEADER_LINE.search(text)
    return (text[:match.start()], True) if match else (text, False)


def extract_response(generated_text: str, prompt: str = "") -> str:
    """The model's answer inside its generated text (section 7.5, made robust).

    Removes an echoed `prompt` (or preamble) and ends at `<|endoftext|>`. Text before
    the first `###` header is the answer; when the model starts with headers itself
    (the book's way: it writes `### Response:`), the answer is what follows its
    `### Response:` header, up to the next header. No answer gives "".
    """
    text = generated_text
    if prompt and text.startswith(prompt):
        text = text[len(prompt):]
    text = text.split(ENDOFTEXT, 1)[0]
    if text.lstrip().startswith(PREAMBLE):
        text = text.lstrip()[len(PREAMBLE):]
    head, found_header = _cut_at_header(text)
    if head.strip() or not found_header:
        return head.strip()
    if "### Response:" in text:
        return _cut_at_header(text.split("### Response:", 1)[1])[0].strip()
    return ""


def check_chat_message(message: str, input_text: str = "") -> None:
    """Raise a ValueError when a chat message cannot be sent."""
    if not isinstance(message, str) or not message.strip():
        raise ValueError("the message is empty: type an instruction for the model")
    if input_text is not None and not isinstance(input_text, str):
        raise ValueError("the input must be text")


def chat_prompt_tokens(model, message: str, input_text: str = "") -> tuple[list[int], int]:
    """The prompt tokens for a chat turn and how many leading tokens the model's context cuts off."""
    check_chat_message(message, input_text)
    ids = encode(response_prompt({"instruction": message.strip(), "input": (input_text or "").strip()}))
    return ids, max(0, len(ids) - model.cfg.context_length)


def chat_reply_stream(model, message: str, input_text: str = "", max_new_tokens: int = 256,
                      temperature: float = 0.0, top_k: int | None = None,
                      seed: int | None = None, precision: str = "fp32") -> Iterator[str]:
    """One chat turn: format the message as an instruction and yield the reply text so far.

    Stops at `<|endoftext|>` or when the model starts a new `###` section; the prompt
    scaffolding never appears in what is yielded. Yields at least once (possibly "").
    """
    check_sampling(temperature, top_k, None, max_new_tokens, vocab_size=model.cfg.vocab_size)
    ids, _ = chat_prompt_tokens(model, message, input_text)
    new_ids: list[int] = []
    shown = None
    for token in stream_generate(model, ids, max_new_tokens, temperature=temperature, top_k=top_k,
                                 eos_id=ENDOFTEXT_ID, seed=seed, precision=precision):
        new_ids.append(token.id)
        text = token_ids_to_text(new_ids)
        reply, ended = _cut_at_header(text)
        if not ended:
            reply = _PARTIAL_HEADER.sub("", reply).rstrip("\ufffd")  # hold back a half-written header/char
        reply = reply.strip()
        if reply != shown:
            shown = reply
            yield reply
        if ended:
            return
    final = extract_response(token_ids_to_text(new_ids))
    if final != shown:
        yield final


def chat_reply(model, message: str, input_text: str = "", **kwargs) -> str:
    """The whole reply of `chat_reply_stream`."""
    reply = ""
    for reply in chat_reply_stream(model, message, input_text, **kwargs):
        pass
    return reply


@dataclass
class ResponseProgress:
    done: int
    total: int
    record: dict  # the latest record with its model_response
    results: list[dict]  # all records answered so far, in the book's format
    new_tokens: int  # tokens generated so far
    elapsed: float  # seconds


def generate_responses(model, entries: list[dict], max_new_tokens: int = 256, temperature: float = 0.0,
                       top_k: int | None = None, seed: int | None = 123,
                       stop_event: threading.Event | None = None,
                       precision: str = "fp32") -> Iterator[ResponseProgress]:
    """Answer every instruction (section 7.7) and yield progress after each one.

    Records come out in the book's format: instruction, input, output, model_response.
    Setting `stop_event` ends the run after the current record, keeping what is done.
    """
    entries = validate_records(entries, "the instructions")
    check_sampling(temperature, top_k, None, max_new_tokens, vocab_size=model.cfg.vocab_size)
    results: list[dict] = []
    new_tokens, start = 0, time.perf_counter()
    for entry in entries:
        if stop_event is not None and stop_event.is_set():
            return
        ids = encode(response_prompt(entry))
        generated = [t.id for t in stream_generate(model, ids, max_new_tokens, temperature=temperature,
                                                   top_k=top_k, eos_id=ENDOFTEXT_ID, seed=seed,
                                                   precision=precision)]
        new_tokens += len(generated)
        record = {"instruction": entry["instruction"], "input": entry["input"], "output": entry["output"],
                  "model_response": extract_response(token_ids_to_text(generated))}
        results.append(record)
        yield ResponseProgress(len(results), len(entries), record, results, new_tokens,
                               time.perf_counter() - start)


def save_responses(path, results: list[dict]) -> Path:
    """Write responses as the book does (`json.dump(..., indent=4)`): a list with the four keys."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    rows = [{k: r.get(k, "") for k in RESPONSE_KEYS} for r in results]
    path.write_text(json.dumps(rows, indent=4, ensure_ascii=False), encoding="utf-8")
    return path


# --- Fine-tuning (sections 7.5-7.6) -----------------------------------------------------

#: The book's settings for instruction fine-tuning (section 7.6; `llm.recipes.INSTRUCT_BOOK`).
BOOK_LR, BOOK_WEIGHT_DECAY = INSTRUCT_BOOK.lr, INSTRUCT_BOOK.weight_decay
BOOK_EPOCHS, BOOK_BATCH_SIZE = INSTRUCT_BOOK.epochs, INSTRUCT_BOOK.batch_size


def instruct_loss(model, batch) -> tuple[torch.Tensor, int]:
    """The book's `calc_loss_batch`: cross-entropy over every target that is not -100.

    Returns the mean loss and how many target tokens it covers.
    """
    input_batch, target_batch = (t.to(model.device) for t in batch)
    logits = model(input_batch)
    loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1), target_batch.flatten(),
                                             ignore_index=IGNORE_INDEX)
    return loss, int((target_batch != IGNORE_INDEX).sum())


def trainable_records(data: list[dict], allowed_max_length: int, mask_instructions: bool) -> list[dict]:
    """The records that keep at least one target token in the loss after truncation.

    Only with `mask_instructions` can a record lose them all: when its instruction
    alone fills `allowed_max_length` tokens.
    """
    if not mask_instructions:
        return list(data)
    dataset = InstructionDataset(data, with_instruction_lengths=True)
    return [entry for entry, n in zip(data, dataset.instruction_lengths) if n < allowed_max_length]


class InstructRun(TrainingJob):
    """An instruction fine-tuning job (section 7.6), in the one job shape of `llm.jobs`.

    Eval events carry `val_loss` (and `train_loss`) in `metrics` and, in `sample`, the model's
    response to the fixed validation instruction `sample_entry`. `finish(path)` saves the model
    (task "instruct") with how it was trained, after the end or a stop.
    """

    task = "instruct"

    def __init__(self, model, train_data: list[dict], val_data: list[dict], settings: InstructSettings,
                 sample_entry: dict | None = None, training: dict | None = None):
        from .training import train

        settings.validate()
        train_data = validate_records(train_data, "the training data")
        val_data = validate_records(val_data, "the validation data") if val_data else []
        self.settings, self.config = settings, settings.train
        allowed = settings.allowed_max_length or model.cfg.context_length
        self.allowed_max_length = min(allowed, model.cfg.context_length)
        mask = settings.mask_instructions
        kept = trainable_records(train_data, self.allowed_max_length, mask)
        self.dropped = len(train_data) - len(kept)
        if not kept:
            raise ValueError(f"every instruction is longer than the {self.allowed_max_length} tokens the model "
                             "sees, so with masked instructions nothing is left to learn: use a model with a "
                             "longer context or turn instruction masking off")
        self.model = model
        self.sample_entry = sample_entry or (val_data[0] if val_data else train_data[0])
        generator = torch.Generator().manual_seed(self.config.seed)
        batch_size = settings.batch_size
        # Section 7.4: the training loader shuffles and drops the last short batch.
        self.train_loader = create_instruction_dataloader(
            kept, batch_size, shuffle=True, drop_last=len(kept) >= batch_size,
            allowed_max_length=self.allowed_max_length, mask_instructions=mask, generator=generator)
        self.val_loader = create_instruction_dataloader(
            val_data, batch_size, allowed_max_length=self.allowed_max_length,
            mask_instructions=mask) if val_data else None
        self.facts = self.training = {
            "recipe": "instruction fine-tuning (chapter 7)", "train_records": len(kept),
            "val_records": len(val_data), "dropped_records": self.dropped, "batch_size": batch_size,
            "mask_instructions": mask, "allowed_max_length": self.allowed_max_length,
            "weight_decay": self.config.weight_decay, "schedule": self.config.schedule, **(training or {})}
        self.run = train(model, self.train_loader, self.val_loader, instruct_loss, self.config, sample=self.sample)
        longest = max(len(ids) for ids in self.train_loader.dataset.encoded_texts) + 1
        self._start(batch_size, min(longest, self.allowed_max_length))

    def sample(self, model) -> str:
        """The model's reply to the fixed validation instruction (the book prints one each evaluation)."""
        entry = self.sample_entry
        return chat_reply(model, entry["instruction"], entry.get("input", ""),
                          max_new_tokens=self.settings.sample_tokens)


def finetune_instruct(model, train_data: list[dict], val_data: list[dict], settings: InstructSettings | None = None,
                      sample_entry: dict | None = None, training: dict | None = None, **changes) -> InstructRun:
    """Start fine-tuning `model` (trained in place: pass a private copy) to follow instructions (section 7.6).

    `settings` default to the book's recipe (`llm.recipes.INSTRUCT_BOOK`: AdamW, lr 5e-5, weight decay
    0.1, 2 epochs, batch 8); `changes` replace fields of the settings or of their TrainConfig.
    """
    settings = (settings or INSTRUCT_BOOK).with_(**changes)
    return InstructRun(model, train_data, val_data, settings, sample_entry, training)


def default_checkpoint_name(base: str) -> str:
    """A file name for a fine-tuned model: instruct-<base>-<date-time>.safetensors."""
    stem = re.sub(r"[^A-Za-z0-9._-]+", "-", Path(str(base)).stem).strip("-") or "model"
    return f"instruct-{stem}-{time.strftime('%Y%m%d-%H%M%S')}.safetensors"

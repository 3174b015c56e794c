"""The SMS spam data of chapter 6: the SMS Spam Collection, the book's balanced 70/10/20 split
(section 6.2), messages padded with <|endoftext|> to one length (section 6.3) and the three loaders.

The language-model data of chapter 2 lives in `llm.data`; the classifier in `llm.classifier`.
"""
from __future__ import annotations

import csv
from dataclasses import dataclass

import torch
from torch.utils.data import DataLoader, Dataset

from .paths import ASSETS_DIR
from .tokenizer import ENDOFTEXT_ID, text_to_token_ids

SPAM_PATH = ASSETS_DIR / "SMSSpamCollection.tsv"
SPAM_LABELS = ("ham", "spam")


def load_spam_data(path=SPAM_PATH):
    """The SMS Spam Collection as a DataFrame with columns Label and Text (section 6.2).

    Read with `csv.QUOTE_NONE`: default quoting merges the lines that contain a `"`
    and loses messages (the book's 4,825 ham come from that); this keeps all 5,574.
    """
    import pandas as pd

    return pd.read_csv(path, sep="\t", header=None, names=["Label", "Text"], quoting=csv.QUOTE_NONE,
                       dtype=str, keep_default_na=False)


def create_balanced_dataset(df, seed: int = 123):
    """Undersample ham to as many messages as there are spam (section 6.2)."""
    import pandas as pd

    num_spam = df[df["Label"] == "spam"].shape[0]
    ham_subset = df[df["Label"] == "ham"].sample(num_spam, random_state=seed)
    return pd.concat([ham_subset, df[df["Label"] == "spam"]])


def random_split(df, train_frac: float, validation_frac: float, seed: int = 123):
    """Shuffle, then cut into train/validation/test parts (section 6.2)."""
    df = df.sample(frac=1, random_state=seed).reset_index(drop=True)
    train_end = int(len(df) * train_frac)
    validation_end = train_end + int(len(df) * validation_frac)
    return df[:train_end], df[train_end:validation_end], df[validation_end:]


def spam_splits(balanced: bool = True, seed: int = 123, path=SPAM_PATH):
    """The book's train/validation/test frames with labels ham→0, spam→1 (70/10/20 split).

    balanced=True is the book's preparation (1,045 / 149 / 300 messages);
    balanced=False keeps the full, imbalanced collection (3,901 / 557 / 1,116).
    """
    df = load_spam_data(path)
    if balanced:
        df = create_balanced_dataset(df, seed)
    df = df.assign(Label=df["Label"].map({label: i for i, label in enumerate(SPAM_LABELS)}))
    if df["Label"].isna().any():
        raise ValueError(f"{path} has labels other than {SPAM_LABELS}")
    return random_split(df, 0.7, 0.1, seed)


class SpamDataset(Dataset):
    """Messages as GPT-2 token ids padded with <|endoftext|> to one length (section 6.3).

    max_length=None pads to the longest message, capped at `context_length` (the
    model's context); longer messages are truncated and counted in `num_truncated`.
    """

    def __init__(self, data, tokenizer=None, max_length: int | None = None,
                 pad_token_id: int = ENDOFTEXT_ID, context_length: int | None = None):
        encode = tokenizer.encode if tokenizer else text_to_token_ids
        self.labels = [int(label) for label in data["Label"]]
        self.encoded_texts = [encode(text) for text in data["Text"]]
        if max_length is None:
            max_length = self._longest_encoded_length()
            if context_length is not None:
                max_length = min(max_length, context_length)
        if max_length < 1:
            raise ValueError(f"max_length must be at least 1 (got {max_length})")
        self.max_length = max_length
        self.num_truncated = sum(len(ids) > max_length for ids in self.encoded_texts)
        self.encoded_texts = [ids[:max_length] + [pad_token_id] * (max_length - len(ids[:max_length]))
                              for ids in self.encoded_texts]

    def __getitem__(self, index):
        return (torch.tensor(self.encoded_texts[index], dtype=torch.long),
                torch.tensor(self.labels[index], dtype=torch.long))

    def __len__(self):
        return len(self.labels)

    def _longest_encoded_length(self) -> int:
        return max((len(ids) for ids in self.encoded_texts), default=1)


@dataclass
class SpamLoaders:
    """The three data loaders of section 6.3 and what the padding did."""

    train_loader: DataLoader
    val_loader: DataLoader
    test_loader: DataLoader
    max_length: int
    num_truncated: dict  # split name -> messages cut to max_length


def create_spam_dataloaders(context_length: int, balanced: bool = True, batch_size: int = 8,
                            seed: int = 123, num_workers: int = 0) -> SpamLoaders:
    """Datasets padded to the longest training message, capped at the context (section 6.3)."""
    if batch_size < 1:
        raise ValueError(f"batch size must be at least 1 (got {batch_size})")
    train_df, val_df, test_df = spam_splits(balanced, seed)
    train_dataset = SpamDataset(train_df, context_length=context_length)
    val_dataset = SpamDataset(val_df, max_length=train_dataset.max_length)
    test_dataset = SpamDataset(test_df, max_length=train_dataset.max_length)
    generator = torch.Generator().manual_seed(seed)
    return SpamLoaders(
        DataLoader(train_dataset, batch_size=batch_size, shuffle=True, drop_last=True,
                   num_workers=num_workers, generator=generator),
        DataLoader(val_dataset, batch_size=batch_size, num_workers=num_workers),
        DataLoader(test_dataset, batch_size=batch_size, num_workers=num_workers),
        train_dataset.max_length,
        {"train": train_dataset.num_truncated, "val": val_dataset.num_truncated,
         "test": test_dataset.num_truncated})
"""Datasets of the book: the sliding-window language-model data of chapter 2."""
from __future__ import annotations

import torch
from torch.utils.data import DataLoader, Dataset

from .tokenizer import text_to_token_ids


class GPTDatasetV1(Dataset):
    """Input/target windows over a token stream, targets shifted by one (section 2.6)."""

    def __init__(self, txt_or_ids, tokenizer=None, max_length: int = 256, stride: int = 128):
        if max_length < 1 or stride < 1:
            raise ValueError(f"max_length and stride must be at least 1 (got {max_length}, {stride})")
        if isinstance(txt_or_ids, str):
            token_ids = (tokenizer.encode(txt_or_ids, allowed_special={"<|endoftext|>"}) if tokenizer
                         else text_to_token_ids(txt_or_ids))
        else:
            token_ids = list(txt_or_ids)
        self.input_ids = []
        self.target_ids = []
        for i in range(0, len(token_ids) - max_length, stride):
            input_chunk = token_ids[i:i + max_length]
            target_chunk = token_ids[i + 1:i + max_length + 1]
            self.input_ids.append(torch.tensor(input_chunk))
            self.target_ids.append(torch.tensor(target_chunk))

    def __len__(self):
        return len(self.input_ids)

    def __getitem__(self, idx):
        return self.input_ids[idx], self.target_ids[idx]


def count_windows(num_tokens: int, max_length: int, stride: int) -> int:
    """How many input/target pairs `GPTDatasetV1` makes from `num_tokens` tokens."""
    return len(range(0, num_tokens - max_length, stride)) if max_length >= 1 and stride >= 1 else 0


def create_dataloader_v1(txt, batch_size=4, max_length=256, stride=128, shuffle=True, drop_last=True,
                         num_workers=0, tokenizer=None, generator: torch.Generator | None = None):
    """The book's data loader of section 2.6."""
    dataset = GPTDatasetV1(txt, tokenizer, max_length, stride)
    return DataLoader(dataset, batch_size=batch_size, shuffle=shuffle, drop_last=drop_last,
                      num_workers=num_workers, generator=generator)

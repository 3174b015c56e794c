"""Files a careless or hostile visitor uploads: broken, lying, nested, renamed.

`make_hostile_files(folder)` writes them and returns {name: path}; the hostile-input
sweep (tests/test_bad_inputs.py) sends each to the endpoints that take files.
"""
from __future__ import annotations

import json
import os
import pickle
import struct
from pathlib import Path


def _lab_checkpoint(path: Path, config: dict, tensors_config: dict | None = None) -> None:
    """A lab checkpoint whose metadata says `config`; its tensors follow `tensors_config` (default: the same)."""
    import torch

    from llm.checkpoints import FORMAT, atomic_save_file
    from llm.config import GPTConfig
    from llm.model import GPTModel

    real = GPTConfig(**(tensors_config or config))
    model = GPTModel(real.with_(context_length=min(real.context_length, 64)))  # no big mask while building it
    tensors = {k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}
    tensors["pos_emb.weight"] = torch.zeros(real.context_length, real.emb_dim)
    atomic_save_file(tensors, path, {"format": FORMAT, "config": json.dumps(config), "task": "lm"})


class _Boom:
    def __reduce__(self):
        return (os.system, ("echo pickled code ran > /dev/null",))


def make_hostile_files(folder: Path) -> dict[str, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    files: dict[str, Path] = {}

    def write(name: str, data: bytes | str) -> None:
        path = folder / name
        path.write_bytes(data.encode() if isinstance(data, str) else data)
        files[name] = path

    depth = 100_000
    write("nested-list.json", "[" * depth + "]" * depth)  # 200 KB of [[[...]]]
    write("nested-object.json", '{"a":' * 40_000 + "1" + "}" * 40_000)
    write("nested-record.json", '[{"instruction": "x", "input": "", "output": ' + "[" * 50_000 + "]" * 50_000 + "}]")
    write("nested-lines.jsonl", "[" * depth + "]" * depth + "\n")
    write("binary.json", os.urandom(4096))
    write("empty.json", "")
    write("not-a-list.json", json.dumps({"instruction": "a dict, not a list"}))
    write("numbers.json", json.dumps(list(range(1000))))
    write("wrong-keys.json", json.dumps([{"question": "q", "answer": "a"}] * 5))
    write("huge-strings.json", json.dumps([{"instruction": "x" * 300_000, "input": "", "output": "y" * 300_000,
                                            "model_response": "z" * 300_000}]))
    write("good.json", json.dumps([{"instruction": "Name a colour.", "input": "", "output": "Blue.",
                                    "model_response": "Red."}] * 3))
    write("junk.csv", "a,b\n\"unterminated,1\n" + "\x00" * 100)
    write("header-only.csv", "instruction,input,output,model_response\n")
    write("wide.csv", ",".join(f"c{i}" for i in range(5000)) + "\n" + ",".join("1" for _ in range(5000)) + "\n")
    write("binary.txt", os.urandom(4096))
    write("empty.txt", "")
    write("nul.txt", "\x00" * 10_000)
    write("lines.txt", "Win a free prize now!\nSee you at lunch.\n" * 10)

    # checkpoints
    write("empty.safetensors", b"")
    write("random.safetensors", os.urandom(10_000))
    write("pickle-renamed.safetensors", pickle.dumps({"tok_emb.weight": _Boom()}))
    write("pickle.pth", pickle.dumps({"tok_emb.weight": _Boom()}))
    write("text.pth", "not a checkpoint")
    write("huge-header.safetensors", struct.pack("<Q", 2**62) + b"{")
    header = json.dumps({"tok_emb.weight": {"dtype": "F32", "shape": [10**9, 10**9], "data_offsets": [0, 16]}}).encode()
    write("lying-shape.safetensors", struct.pack("<Q", len(header)) + header + b"\x00" * 16)
    write("notes.txt.safetensors", "just some text" * 10)
    write("wrong-type.txt", "a text file where a checkpoint should be")
    tiny = dict(vocab_size=50257, context_length=64, emb_dim=4, n_heads=1, n_layers=1, drop_rate=0.0)
    _lab_checkpoint(folder / "context-200k-lie.safetensors", {**tiny, "context_length": 200_000}, tiny)
    _lab_checkpoint(folder / "context-8192-lie.safetensors", {**tiny, "context_length": 8_192}, tiny)
    _lab_checkpoint(folder / "width-lie.safetensors", {**tiny, "emb_dim": 65_536, "n_heads": 1}, tiny)
    _lab_checkpoint(folder / "layers-lie.safetensors", {**tiny, "n_layers": 100_000}, tiny)
    small_vocab = dict(tiny, vocab_size=16)
    _lab_checkpoint(folder / "context-200k.safetensors", {**small_vocab, "context_length": 200_000})
    _lab_checkpoint(folder / "valid-tiny.safetensors", tiny)
    for name in ("context-200k-lie", "context-8192-lie", "width-lie", "layers-lie", "context-200k", "valid-tiny"):
        files[f"{name}.safetensors"] = folder / f"{name}.safetensors"
    return files

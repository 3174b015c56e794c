"""Chapter 7: prompt format, split, collate, response extraction, chat turn, responses file."""
import json
import threading

import pytest
import torch

from llm.instruct import (IGNORE_INDEX, InstructionDataset, book_splits, chat_reply, chat_reply_stream,
                          create_instruction_dataloader, custom_collate_fn, encode, extract_response,
                          format_input, format_response, generate_responses, load_instruction_file,
                          response_prompt, save_responses, split_instruction_data)
from llm.model import GPTModel

WITH_INPUT = {"instruction": "Identify the correct spelling of the following word.",
              "input": "Ocassion", "output": "The correct spelling is 'Occasion.'"}
WITHOUT_INPUT = {"instruction": "What is an antonym of 'complicated'?", "input": "",
                 "output": "An antonym of 'complicated' is 'simple'."}


# --- format and split -------------------------------------------------------------------

def test_format_input_matches_the_book_with_input():
    assert format_input(WITH_INPUT) == (
        "Below is an instruction that describes a task. Write a response that appropriately "
        "completes the request.\n\n### Instruction:\nIdentify the correct spelling of the following "
        "word.\n\n### Input:\nOcassion")
    assert format_input(WITH_INPUT) + format_response(WITH_INPUT) == (
        "Below is an instruction that describes a task. Write a response that appropriately "
        "completes the request.\n\n### Instruction:\nIdentify the correct spelling of the following "
        "word.\n\n### Input:\nOcassion\n\n### Response:\nThe correct spelling is 'Occasion.'")


def test_format_input_matches_the_book_without_input():
    assert format_input(WITHOUT_INPUT) == (
        "Below is an instruction that describes a task. Write a response that appropriately "
        "completes the request.\n\n### Instruction:\nWhat is an antonym of 'complicated'?")
    assert response_prompt(WITHOUT_INPUT).endswith("'complicated'?\n\n### Response:\n")
    assert "### Input" not in format_input({"instruction": "x", "output": "y"})  # input missing entirely


def test_book_split_sizes_and_order():
    splits = book_splits()
    assert (len(splits.train), len(splits.val), len(splits.test)) == (935, 55, 110)
    data = load_instruction_file()
    assert splits.train == data[:935] and splits.test == data[935:1045] and splits.val == data[1045:]
    # the book's test split is the one its answers file was written for
    reference = json.loads(open("assets/instruction-data-with-response.json", encoding="utf-8").read())
    assert [r["instruction"] for r in reference] == [r["instruction"] for r in splits.test]


def test_seeded_split_shuffles_reproducibly():
    data = load_instruction_file()
    a, b = split_instruction_data(data, seed=1), split_instruction_data(data, seed=1)
    assert a == b and (len(a.train), len(a.val), len(a.test)) == (935, 55, 110)
    assert a.train != data[:935]
    assert sorted(map(json.dumps, a.train + a.val + a.test)) == sorted(map(json.dumps, data))
    with pytest.raises(ValueError, match="fractions"):
        split_instruction_data(data, train_frac=0.95, test_frac=0.1)


# --- collate (section 7.3) --------------------------------------------------------------

BOOK_BATCH = [[0, 1, 2, 3, 4], [5, 6], [7, 8, 9]]


def test_collate_matches_the_book_example():
    inputs, targets = custom_collate_fn(BOOK_BATCH)
    assert inputs.tolist() == [[0, 1, 2, 3, 4],
                               [5, 6, 50256, 50256, 50256],
                               [7, 8, 9, 50256, 50256]]
    assert targets.tolist() == [[1, 2, 3, 4, 50256],
                                [6, 50256, -100, -100, -100],
                                [8, 9, 50256, -100, -100]]


def test_collate_allowed_max_length_truncates_inputs_and_targets():
    inputs, targets = custom_collate_fn(BOOK_BATCH, allowed_max_length=3)
    assert inputs.tolist() == [[0, 1, 2], [5, 6, 50256], [7, 8, 9]]
    assert targets.tolist() == [[1, 2, 3], [6, 50256, -100], [8, 9, 50256]]


def test_collate_masks_instructions_as_in_exercise_7_2():
    # instruction lengths 3, 1, 2: targets predicting tokens 1..length-1 are ignored
    batch = [(3, [0, 1, 2, 3, 4]), (1, [5, 6]), (2, [7, 8, 9])]
    inputs, targets = custom_collate_fn(batch, mask_instructions=True)
    assert inputs.tolist() == [[0, 1, 2, 3, 4], [5, 6, 50256, 50256, 50256], [7, 8, 9, 50256, 50256]]
    assert targets.tolist() == [[-100, -100, 3, 4, 50256],
                                [6, 50256, -100, -100, -100],
                                [-100, 9, 50256, -100, -100]]
    _, truncated = custom_collate_fn(batch, mask_instructions=True, allowed_max_length=2)
    assert truncated.tolist() == [[-100, -100], [6, 50256], [-100, 9]]
    with pytest.raises(ValueError, match="instruction_length"):
        custom_collate_fn(BOOK_BATCH, mask_instructions=True)


def test_dataset_masking_leaves_exactly_the_response_and_end_of_text_in_the_loss():
    dataset = InstructionDataset([WITH_INPUT, WITHOUT_INPUT], with_instruction_lengths=True)
    inputs, targets = custom_collate_fn([dataset[0], dataset[1]], mask_instructions=True)
    for row, entry in enumerate([WITH_INPUT, WITHOUT_INPUT]):
        kept = [t for t in targets[row].tolist() if t != IGNORE_INDEX]
        assert kept == encode(format_response(entry)) + [50256]
        assert dataset.instruction_lengths[row] == len(encode(format_input(entry)))
    plain = InstructionDataset([WITH_INPUT])
    assert plain[0] == encode(format_input(WITH_INPUT) + format_response(WITH_INPUT))


def test_dataloader_batches_the_train_split():
    loader = create_instruction_dataloader(book_splits().train[:10], batch_size=4, allowed_max_length=64,
                                           mask_instructions=True)
    batches = list(loader)
    assert [b[0].shape[0] for b in batches] == [4, 4, 2]
    inputs, targets = batches[0]
    assert inputs.shape == targets.shape and inputs.shape[1] <= 64


# --- uploaded files ---------------------------------------------------------------------

@pytest.mark.parametrize("raw, message", [
    (b"{not json", "not valid JSON (line 1, column 2"),
    (b'{"instruction": "a", "output": "b"}', "must be a JSON list"),
    (b"[]", "empty list"),
    (b'[{"instruction": "a", "output": "b"}, {"input": "x", "output": "y"}]',
     "record 1: has no 'instruction' field"),
    (b'[{"instruction": "  ", "output": "b"}]', "record 0: 'instruction' must be a non-empty string"),
    (b'[{"instruction": "a"}]', "record 0: has no 'output' field"),
    (b'[{"instruction": "a", "output": 3}]', "'output' must be a string, not a JSON number"),
    (b'[{"instruction": "a", "output": "b", "input": ["x"]}]', "'input' must be a string"),
    (b'["just text"]', "record 0: is a JSON string"),
    (b"\xff\xfe\x00", "not UTF-8"),
])
def test_malformed_uploads_get_a_clear_message(raw, message):
    with pytest.raises(ValueError) as info:
        load_instruction_file(raw)
    assert message in str(info.value)
    assert "uploaded file" in str(info.value)


def test_upload_lists_several_problems_and_missing_input_is_allowed(tmp_path):
    bad = [{"output": "x"}] * 5
    with pytest.raises(ValueError, match=r"5 invalid records: record 0.*record 2.*\(and 2 more\)"):
        load_instruction_file(json.dumps(bad).encode())
    path = tmp_path / "mine.json"
    path.write_text(json.dumps([{"instruction": "Say hi.", "output": "Hi."}]))
    assert load_instruction_file(path) == [{"instruction": "Say hi.", "input": "", "output": "Hi."}]
    with pytest.raises(FileNotFoundError):
        load_instruction_file(tmp_path / "missing.json")


# --- response extraction ----------------------------------------------------------------

PROMPT = format_input(WITHOUT_INPUT)


@pytest.mark.parametrize("generated, prompt, expected", [
    # the book's case: the model echoes the prompt and writes the header itself
    (PROMPT + "\n\n### Response:\nThe antonym is 'simple'.", PROMPT, "The antonym is 'simple'."),
    # prompt ended with the header; continuation only
    ("The antonym is 'simple'.<|endoftext|>garbage", "", "The antonym is 'simple'."),
    # the model carries on with a new instruction
    ("Simple.\n\n### Instruction:\nWrite a poem.", "", "Simple."),
    ("Simple.\n### Input:\nx\n### Response:\ny", "", "Simple."),
    # the model never writes ### Response: and echoes only part of the prompt
    ("\n\nsimple, easy", PROMPT, "simple, easy"),
    ("### Instruction:\nWhat is an antonym?", "", ""),
    # stops early / empty
    ("", PROMPT, ""),
    ("  <|endoftext|>", "", ""),
    # a '#' inside the answer is not a header
    ("Use C# or F#.", "", "Use C# or F#."),
])
def test_extract_response(generated, prompt, expected):
    assert extract_response(generated, prompt) == expected


# --- chat turn and responses with a tiny model ------------------------------------------

@pytest.fixture
def tiny_model(tiny_cfg):
    return GPTModel(tiny_cfg.with_(context_length=128)).eval()


class ScriptedModel(torch.nn.Module):
    """A stand-in GPT whose greedy output is a fixed token sequence (to test stopping rules)."""

    def __init__(self, cfg, script: list[int]):
        super().__init__()
        self.cfg, self.script, self.calls = cfg, script, 0
        self.tok_emb = torch.nn.Embedding(1, 1)

    @property
    def device(self):
        return torch.device("cpu")

    def forward(self, idx, kv_cache=None, last_only=False, records=None):
        if kv_cache is not None:
            kv_cache.pos += idx.shape[1]
        logits = torch.zeros(idx.shape[0], 1, self.cfg.vocab_size)
        logits[..., self.script[min(self.calls, len(self.script) - 1)]] = 1.0
        self.calls += 1
        return logits


def test_chat_stream_stops_at_a_new_header_and_hides_the_scaffolding(tiny_cfg):
    script = encode("Hello there.\n\n### Instruction:\nMore") + [50256]
    model = ScriptedModel(tiny_cfg.with_(context_length=128), script)
    chunks = list(chat_reply_stream(model, "Say hello", max_new_tokens=50))
    assert chunks[-1] == "Hello there."
    assert all("###" not in c and "#" not in c and "Below is" not in c for c in chunks)
    assert chunks == sorted(set(chunks), key=chunks.index)  # each yield is new text
    assert all(chunks[i + 1].startswith(chunks[i]) for i in range(len(chunks) - 1))


def test_chat_stream_stops_at_end_of_text(tiny_cfg):
    model = ScriptedModel(tiny_cfg.with_(context_length=128), encode("Fine.") + [50256] + encode(" x"))
    assert chat_reply(model, "How are you?", max_new_tokens=20) == "Fine."


def test_chat_with_a_real_tiny_model_streams_growing_text(tiny_model):
    chunks = list(chat_reply_stream(tiny_model, "Name a color.", "", max_new_tokens=8, temperature=1.0,
                                    top_k=50, seed=3))
    assert chunks and all(isinstance(c, str) for c in chunks)
    assert chunks[-1] == chat_reply(tiny_model, "Name a color.", max_new_tokens=8, temperature=1.0,
                                    top_k=50, seed=3)


@pytest.mark.parametrize("message, input_text, match", [
    ("", "", "message is empty"), ("   \n", "", "message is empty"), (None, "", "message is empty"),
])
def test_chat_rejects_an_empty_message(tiny_model, message, input_text, match):
    with pytest.raises(ValueError, match=match):
        list(chat_reply_stream(tiny_model, message, input_text))


def test_chat_rejects_bad_sampling(tiny_model):
    with pytest.raises(ValueError, match="temperature"):
        list(chat_reply_stream(tiny_model, "hi", temperature=-1))


def test_generate_responses_writes_the_books_format(tiny_model, tmp_path):
    entries = book_splits().test[:3]
    progress = list(generate_responses(tiny_model, entries, max_new_tokens=5))
    assert [p.done for p in progress] == [1, 2, 3] and progress[-1].total == 3
    results = progress[-1].results
    assert all(list(r) == ["instruction", "input", "output", "model_response"] for r in results)
    assert [r["output"] for r in results] == [e["output"] for e in entries]
    path = save_responses(tmp_path / "out" / "responses.json", results)
    loaded = json.loads(path.read_text(encoding="utf-8"))
    assert loaded == results and all(isinstance(r["model_response"], str) for r in loaded)


def test_generate_responses_stops_when_asked(tiny_model):
    stop = threading.Event()
    done = []
    for p in generate_responses(tiny_model, book_splits().test[:5], max_new_tokens=2, stop_event=stop):
        done.append(p.done)
        stop.set()
    assert done == [1]


# --- fine-tuning through the one training loop ------------------------------------------

def test_a_few_finetuning_steps_lower_the_loss_and_save_an_instruct_checkpoint(tiny_cfg, tmp_path):
    from llm.checkpoints import load_checkpoint
    from llm.instruct import finetune_instruct, instruct_loss

    splits = book_splits()
    model = GPTModel(tiny_cfg.with_(context_length=64))
    batch = custom_collate_fn([InstructionDataset(splits.train[:8])[i] for i in range(8)], allowed_max_length=64)
    with torch.no_grad():
        before = float(instruct_loss(model, batch)[0])
    run = finetune_instruct(model, splits.train[:8], splits.val[:4], lr=3e-3, epochs=None, max_steps=12,
                            eval_every=4, eval_batches=1, batch_size=4, sample_tokens=5)
    events = list(run)
    result = run.finish(tmp_path / "inst.safetensors")
    with torch.no_grad():
        after = float(instruct_loss(model, batch)[0])
    assert after < before - 0.5, (before, after)
    evals = [e for e in events if e.kind == "eval"]
    assert [e.step for e in evals] == [1, 4, 8, 12] and all("val_loss" in e.metrics for e in evals)
    assert all(isinstance(e.sample, str) and "###" not in e.sample for e in evals)
    assert events[-1].kind == "done"
    ckpt = load_checkpoint(result.path)
    assert ckpt.task == "instruct" and ckpt.training["steps"] == 12 and ckpt.training["batch_size"] == 4
    assert not result.stopped and result.metrics["val_loss"] == evals[-1].metrics["val_loss"]
    assert torch.equal(ckpt.model.out_head.weight, model.out_head.weight)


def test_masked_finetuning_only_counts_response_tokens(tiny_cfg):
    from llm.instruct import finetune_instruct

    data = book_splits().train[:4]
    model = GPTModel(tiny_cfg.with_(context_length=256))
    run = finetune_instruct(model, data, [], max_steps=1, batch_size=4, mask_instructions=True, sample_tokens=2)
    step = next(run)
    expected = sum(len(encode(format_response(e))) + 1 for e in data)  # response tokens + end-of-text
    assert step.kind == "step" and step.seen == expected
    with pytest.raises(ValueError, match="nothing is left to learn"):
        finetune_instruct(GPTModel(tiny_cfg.with_(context_length=8)), data, [], mask_instructions=True)


def test_a_huge_batch_is_refused_with_a_sentence_not_an_out_of_memory(tiny_cfg, monkeypatch):
    """/finetune_instruct with batch_size=10^9 on lab-tiny is refused by the bound; a batch within the
    bound whose logits do not fit the free memory (here 2 GB) by the estimate, before any step."""
    import llm.jobs
    from llm.instruct import finetune_instruct

    data = book_splits()
    with pytest.raises(ValueError, match="batch size must be a whole number from 1 to 65,536"):
        finetune_instruct(GPTModel(tiny_cfg), data.train, data.val, batch_size=10**9)
    monkeypatch.setattr(llm.jobs, "free_memory", lambda device="cpu": 2_000_000_000)
    with pytest.raises(ValueError, match=r"logits [0-9.]+ GB for a batch of 935 × 32 tokens.*use a batch of at most"):
        finetune_instruct(GPTModel(tiny_cfg), data.train, data.val, batch_size=65_536)

"""The lecture preflight (llm.preflight, `python -m llm preflight`) and the lecture script (llm.lecture)."""
import json
import socket

import pytest

from llm import lecture, preflight
from llm.__main__ import main
from ollama_fake import FakeOllama


def _closed_port_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}"


def test_judge_check_without_ollama_fails_with_the_fix_and_is_not_core():
    check, seconds = preflight.judge_check(_closed_port_url(), "llama3")
    assert check.status == "fail" and not check.core and seconds is None
    assert "ollama serve" in check.fix and "ollama pull llama3" in check.fix
    assert check.line().startswith("❌ Judge")


def test_judge_check_with_the_fake_ollama_times_one_answer_and_scales_to_110():
    with FakeOllama() as fake:
        check, seconds = preflight.judge_check(fake.url, "llama3")
        assert len(fake.requests) == 1 and fake.problems == []
    assert check.status == "ok" and "Ready: llama3" in check.reason and "for 110" in check.reason
    assert 0 < seconds < 110 * 5


def test_judge_check_names_the_missing_model():
    with FakeOllama(models={"mistral:latest": 4_100_000_000}) as fake:
        check, _ = preflight.judge_check(fake.url, "llama3")
    assert check.status == "fail" and check.fix == "ollama pull llama3"


def test_generation_prediction_counts_the_cache_refills():
    # 64-token window, 6-token prompt, 200 new tokens: 142 tokens past the window, a refill every 32
    assert preflight.predict_generation(0.01, 0.05, 64, 6, 200) == pytest.approx(0.01 * 200 + 0.05 * (1 + 5))
    assert preflight.predict_generation(0.01, 0.05, 1024, 6, 200) == pytest.approx(2.0 + 0.05)


def test_report_is_ready_unless_a_core_check_fails():
    report = preflight.Report("lab-tiny", [], 2, 2, 8_000_000_000, {"load": 0.1})
    report.checks = [preflight.Check("Judge", "fail", "no server", core=False),
                     preflight.Check("Pretrain", "warn", "slow", "close programs", 300.0)]
    assert report.ready and report.lines()[-1].startswith("Ready")
    report.checks.append(preflight.Check("Generate", "fail", "does not load"))
    assert not report.ready and "❌ Generate: does not load" in report.lines()


def test_cli_preflight_with_the_fake_ollama_predicts_every_demo_and_exits_0(capsys):
    with FakeOllama() as fake:
        code = main(["preflight", "--model", "lab-tiny", "--judge-host", fake.url, "--json"])
    out = json.loads(capsys.readouterr().out)
    assert code == 0 and out["ready"] is True and out["lecture_model"] == "lab-tiny"
    names = [c["name"] for c in out["checks"]]
    for demo in ("Tokenize · Embeddings · Attention", "Pretrain: lecture preset to loss < 1",
                 "Classify: spam fine-tune", "Generate: 200 tokens on lab-tiny", "Judge (110 answers"):
        assert any(n.startswith(demo) for n in names), (demo, names)
    for demo in ("pretrain", "spam", "generate lab-tiny", "judge"):
        assert 0 < out["predictions"][demo] < 24 * 3600, out["predictions"]
    assert {"load", "attention pass", "30 tokens", "3 pretraining steps", "3 fine-tuning steps"} <= set(out["warmup"])
    assert 0 < out["free_bytes"] and 1 <= out["threads"] <= 1024


def test_cli_preflight_rejects_an_unknown_model_with_exit_1(capsys):
    code = main(["preflight", "--model", "no-such-model", "--judge-host", _closed_port_url()])
    out = capsys.readouterr().out
    assert code == 1 and "❌ Lecture model: no-such-model does not load" in out and "Not ready" in out


def test_cli_preflight_rejects_an_empty_model_with_exit_2(capsys):
    assert main(["preflight", "--model", " "]) == 2
    assert "--model is empty" in capsys.readouterr().err


# --- the lecture script ----------------------------------------------------------------

def test_the_bundled_lecture_script_walks_chapters_2_to_7():
    script = lecture.load_script(lecture.LECTURE_FILE, model="lab-tiny")
    tabs = [step.tab for step in script.steps]
    assert tabs[0] == "tokenize" and tabs[-1] == "judge"
    for tab in ("embeddings", "attention", "generate", "pretrain", "classify", "instruct"):
        assert tab in tabs
    assert script.steps[0].model == "lab-tiny" and 10 <= script.minutes <= 20
    assert all(step.point and step.title and step.run for step in script.steps)


def test_every_element_the_script_names_exists_in_the_app():
    from llm.ui.app import build_app

    demo = build_app()
    ids = {getattr(block, "elem_id", None) for block in demo.blocks.values()}
    tab_ids = {getattr(block, "id", None) for block in demo.blocks.values()}
    script = lecture.load_script(lecture.LECTURE_FILE, model="lab-tiny")
    assert lecture.element_ids(script) - ids == set()
    assert {step.tab for step in script.steps} - tab_ids == set()


@pytest.mark.parametrize("text, message", [
    ("{", "not a readable JSON file"),
    ('{"steps": []}', "non-empty list of steps"),
    ('{"steps": [{"tab": "tokenize", "title": "x"}]}', "step 1: point must be"),
    ('{"steps": [{"tab": "t", "title": "x", "point": "p", "inputs": {"a": [1]}}]}', "value of input 'a'"),
    ('{"steps": [{"tab": "t", "title": "x", "point": "p", "expect": {"id": "a"}}]}', "expect must be"),
    ('{"minutes": 0, "steps": [{"tab": "t", "title": "x", "point": "p"}]}', "minutes must be"),
])
def test_a_bad_lecture_script_says_what_to_fix(tmp_path, text, message):
    path = tmp_path / "lecture.json"
    path.write_text(text)
    with pytest.raises(lecture.ScriptError, match=message):
        lecture.load_script(path, model="lab-tiny")


def test_a_missing_script_says_so(tmp_path):
    with pytest.raises(lecture.ScriptError, match="no such lecture script"):
        lecture.load_script(tmp_path / "nope.json", model="lab-tiny")

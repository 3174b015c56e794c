"""The lecture script run end to end in a real browser, through the presenter view's "Next step".

The bundled script (assets/lecture.json) with its training steps cut short (5 pretraining steps,
3 spam and 2 instruction fine-tuning steps), the small `lab-tiny` model as the lecture's model,
and the test suite's fake Ollama as the judge's server, so the run stays short in CI. Each step
is applied by the page itself (tab chosen, inputs filled, button pressed) and must show its
expected result; screenshots go to tests/artifacts/screenshots/lecture-<n>.png.
"""
import json

from conftest import screenshot
from llm.lecture import ENV_SCRIPT, LECTURE_FILE
from llm.preflight import ENV_MODEL
from ollama_fake import FakeOllama

SHORT = {"pt-max-steps": 5, "spam-max-steps": 3, "inst-max-steps": 2}


def short_script(path, judge_url: str) -> int:
    script = json.loads(LECTURE_FILE.read_text(encoding="utf-8"))
    for step in script["steps"]:
        inputs = step.setdefault("inputs", {})
        inputs.update({k: v for k, v in SHORT.items() if k in inputs})
        if step["tab"] == "judge":
            inputs["judge-host"] = judge_url
    path.write_text(json.dumps(script), encoding="utf-8")
    return len(script["steps"])


def expectation(expect: dict) -> str:
    target = f"document.querySelector('#{expect['id']}')"
    if "selector" in expect:
        return f"{target} && {target}.querySelector({json.dumps(expect['selector'])})"
    return f"{target} && {target}.textContent.includes({json.dumps(expect['text'])})"


def test_the_lecture_script_runs_end_to_end_in_presenter_view(own_lab_url, browser, tmp_path, monkeypatch):
    with FakeOllama() as fake:
        n = short_script(tmp_path / "lecture.json", fake.url)
        monkeypatch.setenv(ENV_SCRIPT, str(tmp_path / "lecture.json"))
        monkeypatch.setenv(ENV_MODEL, "lab-tiny")
        page = browser.new_page(viewport={"width": 1280, "height": 720})
        page.set_default_timeout(240_000)
        try:
            page.goto(own_lab_url + "?presenter=1", wait_until="load")
            page.wait_for_function("(document.querySelector('#lab-status') || {textContent: ''}).textContent"
                                   ".includes('models available')")
            steps = json.loads((tmp_path / "lecture.json").read_text())["steps"]
            for i, step in enumerate(steps, start=1):
                page.click("#lecture-next")
                page.wait_for_function(f"document.querySelector('#lecture-step').innerText.includes('{i}/{n} ·')")
                page.wait_for_function(expectation(step["expect"]))
                for key in SHORT.keys() & step.get("inputs", {}).keys():  # the cut took: a run of SHORT steps
                    status = page.inner_text(f"#{key.removesuffix('-max-steps')}-status")
                    assert f"Done: {SHORT[key]} steps" in status, (i, status)
                assert page.inner_text("#lecture-missing").strip() == "", (i, page.inner_text("#lecture-missing"))
                assert page.get_attribute(f"#tab-{step['tab']}-button", "aria-selected") == "true"
                screenshot(page, f"lecture-{i:02d}-{step['tab']}")
            assert "GET /api/tags" in fake.paths  # the judge step asked the (fake) Ollama server
        finally:
            page.close()

"""The lab launched as it is deployed: `python app.py` on a Hugging Face Space and in the Docker image.

Building the Blocks proves nothing about launch (a bad `launch()` argument once passed
every other test and killed the app on a Space). Each test starts `python app.py` in a
child process with the deployment's environment, waits for the first HTTP 200, makes one
API call through `gradio_client`, checks the process is still alive, then stops it.

- A Space runs `python app.py` with `SYSTEM=spaces`; the app must bind 0.0.0.0:7860
  (the only test here that uses port 7860; skipped when something else holds it), and where
  GRADIO_SERVER_PORT names another port, listen there (it once forced 7860, so a launcher that
  chose a port never got an answer, and a taken 7860 killed the start with a traceback).
- A port that is taken ends `python app.py` with exit code 2 and a sentence, never a traceback.
- The Dockerfile's `CMD` runs it with the image's environment (GRADIO_SERVER_NAME=0.0.0.0,
  GRADIO_SERVER_PORT, LLM_LAB_CHECKPOINTS, HF_HOME, HOME) as uid 1000; here as uid 1000 or
  `nobody` when the tests run as root, with a fresh temporary folder as the container's /tmp.
- Spaces' conventions: the README front matter's `sdk_version` is the pinned Gradio, `app_file` exists.
"""
from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from app_process import ROOT, AppProcess, free_port, port_is_free, unprivileged_user

gradio_client = pytest.importorskip("gradio_client")

SPACE_PORT = 7860


def front_matter() -> dict[str, str]:
    """The README's YAML front matter as flat `key: value` strings (lists are not needed here)."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    match = re.match(r"---\n(.*?)\n---\n", text, re.S)
    assert match, "README.md must start with the Spaces front matter between --- lines"
    pairs = (line.split(":", 1) for line in match.group(1).splitlines() if re.match(r"^\w[\w_]*:", line))
    return {key.strip(): value.strip().strip('"') for key, value in pairs}


def pinned_gradio() -> str:
    pins = [line.split("#")[0].strip() for line in (ROOT / "requirements.txt").read_text().splitlines()
            if re.match(r"^gradio\s*[=<>!~]", line.strip())]
    assert len(pins) == 1, pins
    match = re.fullmatch(r"gradio==([\w.]+)", pins[0])
    assert match, f"requirements.txt must pin gradio exactly (gradio==X.Y.Z) to match the Space: {pins[0]}"
    return match.group(1)


def test_front_matter_follows_spaces_conventions():
    meta = front_matter()
    assert meta["sdk"] == "gradio"
    assert meta["sdk_version"] == pinned_gradio(), "the Space must run the Gradio the tests ran"
    assert (ROOT / meta["app_file"]).is_file()
    assert len(meta["short_description"]) <= 60


def test_installed_gradio_is_the_pinned_one():
    import gradio

    assert gradio.__version__ == pinned_gradio()


def _one_api_call(url: str) -> None:
    client = gradio_client.Client(url, verbose=False)
    status, _, ids = client.predict("Every effort moves you", api_name="/tokenize")
    assert ids == [6109, 3626, 6100, 345]
    assert "GPT-2 tokens" in status


def _own_dirs(tmp_path, **env) -> dict:
    """`env` plus checkpoints and a Hugging Face cache of the test's own, so a launch touches nothing shared."""
    return {"LLM_LAB_CHECKPOINTS": str(tmp_path / "checkpoints"), "HF_HOME": str(tmp_path / "hf"), **env}


def test_starts_as_a_space_does_on_0_0_0_0_port_7860(tmp_path):
    if not port_is_free(SPACE_PORT):
        pytest.skip(f"port {SPACE_PORT} is in use on this machine: the Space launch test needs it")
    env = _own_dirs(tmp_path, SYSTEM="spaces")
    for name in ("GRADIO_SERVER_NAME", "GRADIO_SERVER_PORT", "LLM_LAB_LIMITS"):
        env[name] = None  # with none of these set, the app itself must choose 0.0.0.0:7860
    app = AppProcess(tmp_path, env=env, port=SPACE_PORT)
    try:
        app.wait_until_up()
        assert not port_is_free(SPACE_PORT, "0.0.0.0"), "the app must listen on every interface"
        _one_api_call(app.url)
        assert app.alive()
    finally:
        code = app.stop()
    assert code is not None


def test_a_space_listens_on_the_port_its_environment_names(tmp_path):
    port = free_port()
    env = _own_dirs(tmp_path, SYSTEM="spaces", GRADIO_SERVER_PORT=str(port), GRADIO_SERVER_NAME=None,
                    LLM_LAB_LIMITS=None)
    app = AppProcess(tmp_path, env=env, port=port)
    try:
        app.wait_until_up()
        assert not port_is_free(port, "0.0.0.0"), "a Space must listen on every interface"
        assert app.alive()
    finally:
        app.stop()


def test_a_taken_port_ends_the_start_with_a_sentence_and_exit_code_2(tmp_path):
    import socket

    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        app = AppProcess(tmp_path, env=_own_dirs(tmp_path), args=("--port", str(port)), port=port)
        try:
            code = app.proc.wait(180)
        finally:
            app.stop()
    log = app.log()
    assert code == 2, log[-2000:]
    assert str(port) in log and "--port N" in log
    assert "Traceback" not in log


@pytest.fixture
def container_root():
    """A folder the image's user can reach (pytest's own tmp_path is root-only), removed afterwards."""
    import shutil
    import tempfile

    folder = Path(tempfile.mkdtemp(prefix="llm-lab-docker-test-"))
    folder.chmod(0o755)
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


def test_starts_as_the_docker_image_does(container_root):
    """The Dockerfile's ENV and CMD: 0.0.0.0, a port, the checkpoints folder, HF_HOME, a non-root user."""
    tmp_path = container_root
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert 'CMD ["python", "app.py"]' in dockerfile
    for name in ("GRADIO_SERVER_NAME=0.0.0.0", "GRADIO_SERVER_PORT=7860", "LLM_LAB_CHECKPOINTS=", "HF_HOME="):
        assert name in dockerfile, f"the image no longer sets {name}: update this test with it"
    user = unprivileged_user()
    home = tmp_path / "home"
    container_tmp = tmp_path / "tmp"
    for folder in (home, container_tmp, home / "app-checkpoints", home / ".cache" / "huggingface"):
        folder.mkdir(parents=True, exist_ok=True)
    if user is not None:
        for folder in [tmp_path, *tmp_path.rglob("*")]:
            os.chown(folder, user[0], user[1])
    port = free_port()
    env = {"GRADIO_SERVER_NAME": "0.0.0.0", "GRADIO_SERVER_PORT": str(port), "GRADIO_ANALYTICS_ENABLED": "False",
           "HOME": str(home), "HF_HOME": str(home / ".cache" / "huggingface"),
           "LLM_LAB_CHECKPOINTS": str(home / "app-checkpoints"), "TMPDIR": str(container_tmp),
           "GRADIO_TEMP_DIR": str(container_tmp / "gradio"), "PYTHONDONTWRITEBYTECODE": "1",
           "SYSTEM": None, "LLM_LAB_LIMITS": None}
    app = AppProcess(tmp_path / "run", env=env, port=port, user=user)
    try:
        app.wait_until_up()
        assert not port_is_free(port, "0.0.0.0"), "GRADIO_SERVER_NAME=0.0.0.0 must make it listen on every interface"
        _one_api_call(app.url)
        assert app.alive()
        if user is not None:
            assert Path(f"/proc/{app.proc.pid}").stat().st_uid == user[0], "the app must run as the image's user"
    finally:
        app.stop()

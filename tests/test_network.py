"""Network audit: the lab, started as a user starts it, connects to nothing but this machine.

`python app.py` runs in a child process with a socket-level guard (a `sitecustomize.py`
put first on PYTHONPATH, so it also covers Python subprocesses of the app). The guard
refuses every connection, UDP send and name lookup that does not stay on loopback, and
appends each attempt to a log file. The child gets neither HF_HUB_OFFLINE nor
GRADIO_ANALYTICS_ENABLED, so the audit checks the app's own defaults.

Through `gradio_client` the tests then use every offline tab's main endpoint and check
the log holds nothing but the guard's own probe; then press Check Hub and Download
GPT-2 weights, the two buttons that are *meant* to reach huggingface.co, and check that
only they did, and that the UI answers with a clear "unreachable" message.
"""
import json
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

gradio_client = pytest.importorskip("gradio_client")
from gradio_client.exceptions import AppError  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
PROBE_HOST, PROBE_IP = "guard-probe.invalid", "192.0.2.1"  # a reserved name and TEST-NET-1

GUARD = r'''
"""Network guard for tests/test_network.py: refuse and log every connection that leaves loopback."""
import errno
import ipaddress
import json
import os
import socket
import traceback

_LOG = os.environ["NET_GUARD_LOG"]
_INET = (socket.AF_INET, socket.AF_INET6)
_LOCAL_NAMES = {"localhost", "localhost.localdomain", "ip6-localhost", "ip6-loopback"}
_real = {name: getattr(socket.socket, name) for name in ("connect", "connect_ex", "sendto")}
_real_getaddrinfo, _real_gethostbyname = socket.getaddrinfo, socket.gethostbyname


def _is_local(host) -> bool:
    """True for loopback names and addresses (and None/'' , which getaddrinfo reads as local)."""
    if not host:
        return True
    host = (host.decode() if isinstance(host, bytes) else str(host)).strip("[]").split("%")[0].lower()
    if host in _LOCAL_NAMES:
        return True
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return False
    ip = getattr(ip, "ipv4_mapped", None) or ip
    return ip.is_loopback or ip.is_unspecified


def _is_literal_ip(host) -> bool:
    try:
        ipaddress.ip_address(str(host).strip("[]").split("%")[0])
        return True
    except ValueError:
        return False


def _record(kind, host, port):
    frames = traceback.extract_stack()[:-2][-8:]
    entry = {"pid": os.getpid(), "kind": kind, "host": str(host), "port": port, "time": __import__("time").time(),
             "stack": [f"{f.filename}:{f.lineno} {f.name}" for f in frames]}
    fd = os.open(_LOG, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.write(fd, (json.dumps(entry) + "\n").encode())
    finally:
        os.close(fd)


def _outbound(sock, address) -> bool:
    return sock.family in _INET and isinstance(address, tuple) and not _is_local(address[0])


def connect(self, address):
    if _outbound(self, address):
        _record("connect", address[0], address[1])
        raise ConnectionRefusedError(errno.ECONNREFUSED, f"network guard: connection to {address[0]} refused")
    return _real["connect"](self, address)


def connect_ex(self, address):
    if _outbound(self, address):
        _record("connect", address[0], address[1])
        return errno.ECONNREFUSED
    return _real["connect_ex"](self, address)


def sendto(self, data, *args):
    address = args[-1]
    if _outbound(self, address):
        _record("sendto", address[0], address[1])
        raise PermissionError(errno.EPERM, f"network guard: datagram to {address[0]} refused")
    return _real["sendto"](self, data, *args)


def getaddrinfo(host, port, *args, **kwargs):
    if not _is_local(host) and not _is_literal_ip(host):
        _record("resolve", host, port)
        raise socket.gaierror(socket.EAI_NONAME, f"network guard: lookup of {host} refused")
    return _real_getaddrinfo(host, port, *args, **kwargs)


def gethostbyname(host):
    if not _is_local(host) and not _is_literal_ip(host):
        _record("resolve", host, None)
        raise socket.gaierror(socket.EAI_NONAME, f"network guard: lookup of {host} refused")
    return _real_gethostbyname(host)


socket.socket.connect, socket.socket.connect_ex, socket.socket.sendto = connect, connect_ex, sendto
socket.getaddrinfo, socket.gethostbyname = getaddrinfo, gethostbyname

if os.environ.get("NET_GUARD_PROBE"):  # proof that the guard is loaded in this very process
    for attempt in (lambda: socket.create_connection(("guard-probe.invalid", 80), timeout=1),
                    lambda: socket.socket().connect(("192.0.2.1", 9))):
        try:
            attempt().close()
        except OSError:
            pass
'''


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class GuardedApp:
    """`python app.py` under the guard: its URL, process and attempt log."""

    def __init__(self, tmp: Path, **extra_env: str):
        (tmp / "guard").mkdir()
        (tmp / "guard" / "sitecustomize.py").write_text(GUARD)
        self.log = tmp / "attempts.jsonl"
        self.user_windows: list[tuple[int, int]] = []  # log lines written while a user asked for the Hub
        env = {k: v for k, v in os.environ.items()
               if k not in ("HF_HUB_OFFLINE", "GRADIO_ANALYTICS_ENABLED", "PYTHONPATH")}
        env.update(PYTHONPATH=os.pathsep.join(filter(None, [str(tmp / "guard"), os.environ.get("PYTHONPATH")])),
                   NET_GUARD_LOG=str(self.log), NET_GUARD_PROBE="1", LLM_LAB_CHECKPOINTS=str(tmp / "checkpoints"),
                   HF_HOME=str(tmp / "hf-home"))  # an empty Hub cache: GPT-2 must come from the Hub
        env.update(extra_env)
        port = _free_port()
        self.url = f"http://127.0.0.1:{port}/"
        self.output = tmp / "app.log"
        with open(self.output, "wb") as out:
            self.proc = subprocess.Popen([sys.executable, "app.py", "--port", str(port)], cwd=ROOT, env=env,
                                         stdout=out, stderr=subprocess.STDOUT)

    def wait_until_up(self, limit: float = 120.0) -> None:
        deadline = time.monotonic() + limit
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"the app exited with code {self.proc.returncode}:\n{self.output.read_text()}")
            try:
                with urllib.request.urlopen(self.url, timeout=2) as response:
                    if response.status == 200:
                        return
            except OSError:
                time.sleep(0.1)
        raise AssertionError(f"no HTTP 200 from {self.url} within {limit} s:\n{self.output.read_text()}")

    def attempts(self) -> list[dict]:
        lines = self.log.read_text().splitlines() if self.log.exists() else []
        return [dict(json.loads(line), line=i) for i, line in enumerate(lines)]

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def _is_probe(attempt: dict) -> bool:
    return attempt["host"] in (PROBE_HOST, PROBE_IP)


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    guarded = GuardedApp(tmp_path_factory.mktemp("network"))
    try:
        guarded.wait_until_up()
        yield guarded
    finally:
        guarded.stop()


@pytest.fixture(scope="module")
def client(app):
    return gradio_client.Client(app.url, verbose=False)


def test_the_guard_is_active_in_the_app_process(app):
    probes = {(a["kind"], a["host"]) for a in app.attempts() if a["pid"] == app.proc.pid and _is_probe(a)}
    assert probes == {("resolve", PROBE_HOST), ("connect", PROBE_IP)}, app.attempts()


def _unasked(app) -> list[dict]:
    """Attempts that were neither the guard's probe nor made while a test pressed a Hub button."""
    return [a for a in app.attempts() if not _is_probe(a)
            and not any(start <= a["line"] < end for start, end in app.user_windows)]


def _file_outputs(outputs) -> list[Path]:
    return [Path(o) for o in outputs if isinstance(o, str) and o.endswith((".safetensors", ".pth"))]


def test_every_offline_tab_answers_without_outbound_connections(app, client):
    names = set(client.view_api(return_format="dict", print_info=False)["named_endpoints"])
    assert {"/tokenize", "/embeddings", "/attention", "/generate", "/finetune_spam", "/finetune_instruct",
            "/check_hub"} <= names
    assert urllib.request.urlopen(app.url + "config", timeout=10).status == 200  # what a browser loads first

    _, _, ids = client.predict("Every effort moves you", api_name="/tokenize")
    assert ids == [6109, 3626, 6100, 345] or ids.get("ids", ids) == [6109, 3626, 6100, 345]
    client.predict("Every effort moves you", 4, 1, api_name="/sliding_window")
    client.predict("lab-tiny", "Every effort moves you", "king, queen", api_name="/embeddings")
    client.predict("lab-tiny", "king", 5, api_name="/neighbours")
    client.predict("lab-tiny", "Your journey starts with one step", 0, 0, "one head", api_name="/attention")
    client.predict("lab-tiny", "Your journey starts with one step", api_name="/logit_lens")
    assert "lab-tiny" in client.predict("lab-tiny", api_name="/model_info")
    job = client.submit("lab-tiny", "Every effort moves you", 5, 0.0, 50, 1.0, 123, True, False,
                        api_name="/generate")
    list(job)
    assert len(job.outputs()[-1][2]["token_ids"]) == 5
    client.predict("lab-tiny", "Every effort moves you", 0.7, 50, 0.9, api_name="/next_token")

    spam = client.submit("lab-tiny", "balanced", "head", 2, 4, 1, 1e-3, 8, 2, 123, api_name="/finetune_spam")
    list(spam)
    assert any(p.exists() for p in _file_outputs(spam.outputs()[-1])), spam.outputs()[-1]
    instruct = client.submit("lab-tiny", "book", None, 1, 1e-3, 8, 2, False, api_name="/finetune_instruct")
    list(instruct)
    assert any(p.exists() for p in _file_outputs(instruct.outputs()[-1])), instruct.outputs()[-1]
    client.predict("example", None, "model_response", "(none)", api_name="/records")

    assert _unasked(app) == [], "outbound connection attempts nobody asked for"
    assert app.proc.poll() is None


def test_only_the_hub_buttons_reach_for_the_hub_and_say_it_is_unreachable(app, client):
    before = len(app.attempts())
    assert not any("huggingface" in a["host"] for a in _unasked(app))
    try:
        status = client.predict(api_name="/check_hub")
        with pytest.raises(AppError) as download:
            client.predict("gpt2-small", "gpt2-small", None, "gpt2-small", api_name="/download_gpt2")
    finally:
        app.user_windows.append((before, len(app.attempts())))
    assert "Hub: ❌" in status and "unreachable" in status
    assert "unreachable" in str(download.value) and "python -m llm download gpt2-small" in str(download.value)
    asked = app.attempts()[before:]
    assert asked and all(a["host"] == "huggingface.co" for a in asked), asked
    assert app.proc.poll() is None

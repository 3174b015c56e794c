"""`python app.py` in a child process, started the way a deployment starts it.

Used by the launch tests (a Space, the Docker image's CMD), the hostile-input sweep and
the load benchmark: each needs the app as it really runs (its own process, its own
environment, maybe another user), its URL, whether it is still alive and how much
memory it holds.

    app = AppProcess(tmp_path, env={"SYSTEM": "spaces"}, port=7860)
    app.wait_until_up()      # the first HTTP 200, or an AssertionError with the app's output
    app.alive(), app.memory_mb()
    app.stop()
"""
from __future__ import annotations

import os
import resource
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_is_free(port: int, host: str = "0.0.0.0") -> bool:
    import socket

    with socket.socket() as s:
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def process_tree(pid: int) -> list[int]:
    """`pid` and all its descendants, from /proc/<pid>/task/*/children."""
    pids, todo = [], [pid]
    while todo:
        current = todo.pop()
        pids.append(current)
        for task in Path(f"/proc/{current}/task").glob("*"):
            try:
                todo += [int(child) for child in (task / "children").read_text().split()]
            except OSError:  # the task ended meanwhile
                pass
    return pids


def memory_mb(pid: int) -> dict:
    """Current (VmRSS) and peak (VmHWM) resident memory of `pid` and its children, in MB."""
    totals = {"VmRSS": 0, "VmHWM": 0}
    for p in process_tree(pid):
        try:
            lines = Path(f"/proc/{p}/status").read_text().splitlines()
        except OSError:
            continue
        for line in lines:
            key, _, value = line.partition(":")
            if key in totals:
                totals[key] += int(value.split()[0])  # kB
    return {"rss_mb": round(totals["VmRSS"] / 1024, 1), "peak_mb": round(totals["VmHWM"] / 1024, 1)}


def unprivileged_user() -> tuple[int, int, str] | None:
    """(uid, gid, name) of uid 1000 (the Docker image's user) or `nobody`, when we are root and can switch."""
    if os.geteuid() != 0:
        return None
    import pwd

    for lookup in (lambda: pwd.getpwuid(1000), lambda: pwd.getpwnam("nobody")):
        try:
            entry = lookup()
        except KeyError:
            continue
        probe = subprocess.run(["setpriv", f"--reuid={entry.pw_uid}", f"--regid={entry.pw_gid}", "--clear-groups",
                                sys.executable, "-c", "import torch, gradio, llm"], cwd=ROOT,
                               capture_output=True, timeout=120)
        if probe.returncode == 0:  # the venv and the tree are readable by that user
            return entry.pw_uid, entry.pw_gid, entry.pw_name
    return None


class AppProcess:
    """`python app.py [args]` with `env` added to this environment (a None value removes that variable)."""

    def __init__(self, workdir: Path, env: dict[str, str] | None = None, args=(), port: int | None = None,
                 host: str = "127.0.0.1", user: tuple[int, int, str] | None = None,
                 address_space_bytes: int | None = None):
        workdir.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        self.url = f"http://{host}:{self.port}/"
        full_env = dict(os.environ)
        full_env.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
        full_env.setdefault("HF_HUB_OFFLINE", "1")
        for name, value in (env or {}).items():  # None removes a variable
            if value is None:
                full_env.pop(name, None)
            else:
                full_env[name] = value
        command = [sys.executable, "app.py", *args]
        if user is not None:
            uid, gid, _ = user
            command = ["setpriv", f"--reuid={uid}", f"--regid={gid}", "--clear-groups", *command]
        self.output = workdir / "app.log"

        def limit_memory():  # a safety net on a shared test machine: an allocation fails instead of the machine
            if address_space_bytes:
                resource.setrlimit(resource.RLIMIT_AS, (address_space_bytes, address_space_bytes))

        with open(self.output, "wb") as out:
            self.proc = subprocess.Popen(command, cwd=ROOT, env=full_env, stdout=out, stderr=subprocess.STDOUT,
                                         preexec_fn=limit_memory if address_space_bytes else None)

    def log(self) -> str:
        return self.output.read_text(errors="replace")

    def wait_until_up(self, limit: float = 180.0) -> float:
        """Seconds until the first HTTP 200; an AssertionError (with the app's output) if it exits or never answers."""
        start = time.monotonic()
        while time.monotonic() - start < limit:
            if self.proc.poll() is not None:
                raise AssertionError(f"the app exited with code {self.proc.returncode}:\n{self.log()[-4000:]}")
            try:
                with urllib.request.urlopen(self.url, timeout=2) as response:
                    if response.status == 200:
                        return time.monotonic() - start
            except OSError:
                time.sleep(0.2)
        raise AssertionError(f"no HTTP 200 from {self.url} within {limit} s:\n{self.log()[-4000:]}")

    def alive(self) -> bool:
        return self.proc.poll() is None

    def memory_mb(self) -> dict:
        return memory_mb(self.proc.pid)

    def stop(self) -> int | None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        return self.proc.returncode

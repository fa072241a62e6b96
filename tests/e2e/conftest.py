"""Starts the real writeup-server binary on a free loopback port with the tiny fixture model."""
import json
import atexit
import os
import pathlib
import queue
import shutil
import subprocess
import tempfile
import threading
import time

import pytest
import requests

ROOT = pathlib.Path(__file__).resolve().parents[2]
DATA = ROOT / "tests" / "data"
SERVER_BIN = os.environ.get("WRITEUP_SERVER_BIN", str(ROOT / "build" / "writeup-server"))
# Start-up (model load) takes well under a second normally; a sanitized build is slower.
START_TIMEOUT_S = float(os.environ.get("WRITEUP_START_TIMEOUT_S", "60"))
# The servers' packed-weights cache (models[].packed_cache, "auto" by default, would write a
# .writeup-cache/ folder into tests/data/tiny-gpt2): one temp folder for the session, given to
# every server that does not choose its own (--packed-cache, or a model's packed_cache).
PACKED_CACHE = tempfile.mkdtemp(prefix="writeup-e2e-packed-")
# Any tool or server a test starts without its own setting: "auto" means no cache (so nothing
# writes beside tests/data), as ctest sets it too.
os.environ.setdefault("WRITEUP_PACKED_CACHE", "off")
atexit.register(shutil.rmtree, PACKED_CACHE, True)


class Server:
    def __init__(self, *args, config=None, env=None, binary=None, wait_ready=True):
        cmd = [binary or SERVER_BIN, "--host", "127.0.0.1", "--port", "0", "--log-level", "warn"]
        self._config_file = None
        if config is not None:
            # No page at / unless a test asks for one (the default, "auto", serves the editor
            # bundle when src/web/dist was built, and would answer unknown GETs with its page).
            config = {**config, "server": {"static_dir": None, **config.get("server", {})}}
            self._config_file = tempfile.NamedTemporaryFile("w", suffix=".json", delete=False)
            json.dump(config, self._config_file)
            self._config_file.close()
            cmd += ["--config", self._config_file.name]
        else:
            cmd += ["--model", f"tiny-gpt2={DATA / 'tiny-gpt2'}", "--static-dir", ""]
        cmd += list(args)
        chosen = config is not None and any("packed_cache" in m for m in config.get("models", []))
        if "--packed-cache" not in args and not chosen:
            cmd += ["--packed-cache", PACKED_CACHE]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                                     errors="replace", env={**os.environ, **(env or {})})
        # The server may print other lines (a warning about Redis, say) before the
        # "listening on" line: read every line on a thread, which keeps draining stdout for
        # the server's whole life so the pipe never fills.
        self.output = []
        lines = queue.Queue()
        threading.Thread(target=self._drain, args=(lines,), daemon=True).start()
        line = self._wait_listening(lines, START_TIMEOUT_S)
        self.url = line.strip().split()[-1]
        self.port = int(self.url.rsplit(":", 1)[1])
        self.ws_url = f"ws://127.0.0.1:{self.port}"
        deadline = time.time() + START_TIMEOUT_S
        while wait_ready and time.time() < deadline:
            if requests.get(self.url + "/ready", timeout=5).status_code == 200:
                break
            time.sleep(0.05)
        else:
            if wait_ready:
                raise RuntimeError("server never became ready")

    def _drain(self, lines):
        for line in self.proc.stdout:
            self.output.append(line)
            lines.put(line)
        lines.put(None)  # end of output: the process closed stdout (exited)

    def _wait_listening(self, lines, timeout):
        """The "listening on" line, reading past any other line; fails when the process exits
        first or after `timeout` s."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                self.proc.kill()
                self.proc.wait()
                raise RuntimeError(f"server did not print its listening line in {timeout} s: {self.output!r}")
            try:
                line = lines.get(timeout=left)
            except queue.Empty:
                continue
            if line is None:
                self.proc.wait(timeout=10)
                raise RuntimeError(f"server exited with {self.proc.returncode} before listening: {self.output!r}")
            if "listening on" in line:
                return line

    def stop(self, timeout=10):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self._config_file:
            os.unlink(self._config_file.name)
        return self.proc.returncode


def pytest_sessionfinish(session, exitstatus):
    """No server of the suite may leave a packed-weights cache in the source tree."""
    written = [str(p) for p in DATA.glob("*/.writeup-cache")]
    if written:
        print("\nFAILED: a test server wrote a packed-weights cache into tests/data:", *written)
        for path in written:
            shutil.rmtree(path, True)
        session.exitstatus = 1


def config(**sections):
    """A server config with the tiny model; each keyword is a whole section (limits={...})."""
    cfg = {"models": [{"name": "tiny-gpt2", "path": str(DATA / "tiny-gpt2")}]}
    for name, values in sections.items():
        cfg[name] = values
    return cfg


@pytest.fixture(scope="session")
def server():
    s = Server()
    yield s
    s.stop()


@pytest.fixture(scope="session")
def golden():
    return {c["name"]: c for c in json.loads((DATA / "golden.json").read_text())["cases"]}


def free_port():
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Redis:
    """A real redis-server on a free loopback port, without persistence."""

    def __init__(self):
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc = None
        self.start()

    def start(self):
        self.proc = subprocess.Popen(["redis-server", "--port", str(self.port), "--bind", "127.0.0.1",
                                      "--save", "", "--appendonly", "no"],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.time() + 10
        while time.time() < deadline:
            if self.cli("PING") == "PONG":
                return
            time.sleep(0.05)
        raise RuntimeError("redis-server did not start")

    def kill(self):
        self.proc.kill()
        self.proc.wait()

    def cli(self, *args):
        r = subprocess.run(["redis-cli", "-p", str(self.port), *args], capture_output=True, text=True, timeout=10)
        return r.stdout.strip()


def metric(server, name, **labels):
    """Sum of the samples of `name` whose labels include `labels`."""
    total = 0.0
    for line in requests.get(server.url + "/metrics", timeout=10).text.splitlines():
        if not line.startswith(name) or line[len(name)] not in "{ ":
            continue
        series, value = line.rsplit(" ", 1)
        if all(f'{k}="{v}"' in series for k, v in labels.items()):
            total += float(value)
    return total

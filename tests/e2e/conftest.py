"""Starts the real writeup-server binary on a free loopback port with the tiny fixture model."""
import json
import os
import pathlib
import subprocess
import tempfile
import time

import pytest
import requests

ROOT = pathlib.Path(__file__).resolve().parents[2]
DATA = ROOT / "tests" / "data"
SERVER_BIN = os.environ.get("WRITEUP_SERVER_BIN", str(ROOT / "build" / "writeup-server"))


class Server:
    def __init__(self, *args, config=None, env=None):
        cmd = [SERVER_BIN, "--host", "127.0.0.1", "--port", "0", "--log-level", "warn"]
        self._config_file = None
        if config is not None:
            self._config_file = tempfile.NamedTemporaryFile("w", suffix=".json", delete=False)
            json.dump(config, self._config_file)
            self._config_file.close()
            cmd += ["--config", self._config_file.name]
        else:
            cmd += ["--model", f"tiny-gpt2={DATA / 'tiny-gpt2'}"]
        cmd += list(args)
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                                     env={**os.environ, **(env or {})})
        line = self.proc.stdout.readline()
        if "listening on" not in line:
            self.proc.kill()
            raise RuntimeError(f"server did not start: {line!r}")
        self.url = line.strip().split()[-1]
        self.port = int(self.url.rsplit(":", 1)[1])
        self.ws_url = f"ws://127.0.0.1:{self.port}"
        deadline = time.time() + 30
        while time.time() < deadline:
            if requests.get(self.url + "/ready", timeout=5).status_code == 200:
                break
            time.sleep(0.05)
        else:
            raise RuntimeError("server never became ready")

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

"""Shared pieces of the stress suite: the real server and redis-server (the e2e suite's classes),
the short/long scale, process figures from /proc, /metrics, a /health prober in its own process,
a raw WebSocket client for clients that misbehave on purpose, and the figures file.

Everything is loopback only, and every wait has a timeout and every loop a count.
Scale: WRITEUP_STRESS=long (scripts/stress) runs the long version; anything else the short one
that CI runs (ctest -R stress). WRITEUP_STRESS_RESULTS=FILE appends each test's figures as JSON
lines (scripts/stress prints them)."""
import base64
import importlib.util
import json
import os
import pathlib
import socket
import struct
import subprocess
import sys
import threading
import time

import requests

ROOT = pathlib.Path(__file__).resolve().parents[2]

# The e2e suite's Server and Redis, loaded under another module name so that the two test
# directories can run in one pytest session.
_spec = importlib.util.spec_from_file_location("writeup_e2e_conftest", ROOT / "tests" / "e2e" / "conftest.py")
e2e = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(e2e)
DATA = e2e.DATA
Redis = e2e.Redis

LONG = os.environ.get("WRITEUP_STRESS", "short") == "long"
WS_PATH = "/ws/async/writeup/text_generation/session/{}/"
MiB = 1024 * 1024


def scale(short, long):
    return long if LONG else short


def config(limits=None, cache=None, stream=None, server=None, max_batch=8):
    """A config like config/local.json (the tiny model, io_threads 2) with the given overrides."""
    cfg = {
        "server": {"io_threads": 2},
        "limits": {"max_connections": 1024, "max_queue": 64, "request_timeout_s": 60, "idle_timeout_s": 300},
        "stream": {"every_words": 5},
        "cache": {"redis": None, "memory_entries": 1000},
        "models": [{"name": "tiny-gpt2", "path": str(DATA / "tiny-gpt2"), "device": "cpu", "dtype": "float32",
                    "workers": 1, "max_batch": max_batch}],
        "log_level": "warn",
    }
    for name, values in (("limits", limits), ("cache", cache), ("stream", stream), ("server", server)):
        cfg[name].update(values or {})
    return cfg


class StressServer:
    """The real writeup-server (tests/e2e/conftest.py's Server) whose stdout is drained, so that
    the warnings a stress run provokes never fill the pipe and block its logging."""

    def __init__(self, cfg):
        self._server = e2e.Server(config=cfg)
        self.proc, self.url, self.port, self.ws_url = (self._server.proc, self._server.url, self._server.port,
                                                       self._server.ws_url)
        self.pid = self.proc.pid
        self.log_tail = []
        self._drain = threading.Thread(target=self._read_stdout, daemon=True)
        self._drain.start()

    def _read_stdout(self):
        if self.proc.stdout is None:  # the e2e Server no longer pipes it: nothing to drain
            return
        for line in self.proc.stdout:
            self.log_tail = (self.log_tail + [line.rstrip()])[-50:]

    def alive(self):
        return self.proc.poll() is None

    def stop(self):
        return self._server.stop()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()

    # --- figures of the process ---
    def fds(self):
        return len(os.listdir(f"/proc/{self.pid}/fd"))

    def rss(self):
        """Resident set size in bytes."""
        for line in pathlib.Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        raise RuntimeError("no VmRSS")

    def metric(self, name, **labels):
        return e2e.metric(self, name, **labels)

    def wait_metric(self, name, value, timeout, **labels):
        """Polls until the metric equals `value`; returns the last value seen."""
        deadline = time.time() + timeout
        seen = self.metric(name, **labels)
        while seen != value and time.time() < deadline:
            time.sleep(0.2)
            seen = self.metric(name, **labels)
        return seen

    def health(self, timeout=10):
        return requests.get(self.url + "/health", timeout=timeout).status_code


class RssSampler:
    """Samples the server's RSS every `interval` seconds on a thread (bounded by `max_samples`)."""

    def __init__(self, server, interval=0.5, max_samples=100000):
        self.server, self.interval, self.max_samples = server, interval, max_samples
        self.samples = []  # (seconds since start, bytes)
        self._stop = threading.Event()
        self._t0 = time.time()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.is_set() and len(self.samples) < self.max_samples:
            try:
                self.samples.append((time.time() - self._t0, self.server.rss()))
            except (OSError, RuntimeError):
                return
            self._stop.wait(self.interval)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join(10)

    def peak(self):
        return max(v for _, v in self.samples)


def percentile(values, p):
    if not values:
        return float("nan")
    v = sorted(values)
    return v[min(len(v) - 1, int(round(p / 100 * (len(v) - 1))))]


# --- /health prober in its own process, so that the client load's event loop and GIL do not
# --- count in the latency it measures.
_PROBE_SCRIPT = r"""
import json, select, socket, sys, time
port, interval, limit = int(sys.argv[1]), float(sys.argv[2]), int(sys.argv[3])
lat, failures = [], []
while len(lat) + len(failures) < limit:
    if select.select([sys.stdin], [], [], interval)[0]:
        break  # the parent closed our stdin: stop
    t = time.perf_counter()
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
            s.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
            data = b""
            while True:
                chunk = s.recv(4096)
                if not chunk:
                    break
                data += chunk
        if data.startswith(b"HTTP/1.1 200"):
            lat.append(time.perf_counter() - t)
        else:
            failures.append(data[:40].decode("latin-1"))
    except OSError as e:
        failures.append(type(e).__name__)
print(json.dumps({"latencies": lat, "failures": failures}), flush=True)
"""


class HealthProber:
    """GET /health on a fresh connection every `interval` s until stopped (at most `limit` probes)."""

    def __init__(self, port, interval=0.05, limit=20000):
        self.proc = subprocess.Popen([sys.executable, "-c", _PROBE_SCRIPT, str(port), str(interval), str(limit)],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self.latencies, self.failures = [], []

    def stop(self, timeout=30):
        out, _ = self.proc.communicate(timeout=timeout)  # closes our end of its stdin: it stops
        result = json.loads(out)
        self.latencies, self.failures = result["latencies"], result["failures"]
        return self

    def summary(self):
        ms = [x * 1000 for x in self.latencies]
        return {"probes": len(ms), "failures": len(self.failures), "p50_ms": round(percentile(ms, 50), 2),
                "p99_ms": round(percentile(ms, 99), 2), "max_ms": round(max(ms), 2) if ms else None}


# --- a raw WebSocket client (RFC 6455, client frames masked) for clients that misbehave on purpose:
# --- never read, or vanish with a TCP reset.
class RawWebSocket:
    def __init__(self, port, session="raw", rcvbuf=None, timeout=30):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if rcvbuf:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)  # before connect: caps the window
        self.sock.settimeout(timeout)
        self.sock.connect(("127.0.0.1", port))
        key = base64.b64encode(os.urandom(16)).decode()
        self.sock.sendall((f"GET {WS_PATH.format(session)} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
                           f"Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                           f"Sec-WebSocket-Version: 13\r\n\r\n").encode())
        self.buf = b""
        while b"\r\n\r\n" not in self.buf:
            chunk = self.sock.recv(1)  # byte by byte: nothing of the first frame is taken here
            if not chunk:
                raise ConnectionError("closed during the handshake")
            self.buf += chunk
            if len(self.buf) > 8192:
                raise ConnectionError("handshake answer too long")
        status = self.buf.split(b"\r\n", 1)[0]
        if b" 101 " not in status:
            raise ConnectionError(f"upgrade refused: {status!r}")
        self.buf, self.pos = bytearray(), 0

    def send_text(self, text):
        payload = text.encode()
        n = len(payload)
        header = bytes([0x81])
        if n < 126:
            header += bytes([0x80 | n])
        elif n < 65536:
            header += bytes([0x80 | 126]) + struct.pack("!H", n)
        else:
            header += bytes([0x80 | 127]) + struct.pack("!Q", n)
        mask = os.urandom(4)
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload)) if n < 4096 else _mask_fast(payload, mask)
        self.sock.sendall(header + mask + masked)

    def read_message(self, timeout):
        """(opcode, payload) of the next whole message (fragments joined); control frames as they come."""
        opcode, fin, payload = self.read_frame(timeout)
        parts = [payload]
        for _ in range(1 << 20):
            if fin or opcode >= 8:
                return opcode, b"".join(parts)
            _, fin, more = self.read_frame(timeout)
            parts.append(more)
        raise ConnectionError("too many fragments")

    def read_frame(self, timeout):
        """(opcode, fin, payload) of the next frame; raises socket.timeout / ConnectionError."""
        self.sock.settimeout(timeout)
        buf = self.buf

        def need(k):
            while len(buf) - self.pos < k:
                if self.pos > (1 << 20):  # drop what was consumed, now and then (not per frame)
                    del buf[:self.pos]
                    self.pos = 0
                chunk = self.sock.recv(1 << 20)
                if not chunk:
                    raise ConnectionError("closed without a close frame")
                buf.extend(chunk)

        need(2)
        p = self.pos
        opcode, fin, n, head = buf[p] & 0x0F, bool(buf[p] & 0x80), buf[p + 1] & 0x7F, 2
        if n == 126:
            need(4)
            n, head = struct.unpack("!H", buf[self.pos + 2:self.pos + 4])[0], 4
        elif n == 127:
            need(10)
            n, head = struct.unpack("!Q", buf[self.pos + 2:self.pos + 10])[0], 10
        need(head + n)
        start = self.pos + head
        payload = bytes(buf[start:start + n])
        self.pos = start + n
        return opcode, fin, payload

    def reset(self):
        """Vanish with a TCP RST (SO_LINGER 0)."""
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.sock.close()

    def close(self):
        self.sock.close()


def _mask_fast(payload, mask):
    m = int.from_bytes(mask * ((len(payload) + 3) // 4), "big") >> (8 * ((4 - len(payload) % 4) % 4))
    return (int.from_bytes(payload, "big") ^ m).to_bytes(len(payload), "big")


def new_request(prompt="Once upon a time", length=20, batch_size=2, seed=None, **kw):
    msg = {"message_type": "new_request", "prompt": prompt, "length": length, "batch_size": batch_size,
           "temperature": 0.7, "top_k": 10, "top_p": 0, "model_name": "tiny-gpt2"}
    if seed is not None:
        msg["seed"] = seed
    msg.update(kw)
    return json.dumps(msg)


def record(test, **figures):
    """Prints the figures (pytest -s, or the failure report) and appends them to the results file."""
    line = json.dumps({"test": test, "scale": "long" if LONG else "short", **figures})
    print(line)
    path = os.environ.get("WRITEUP_STRESS_RESULTS")
    if path:
        with open(path, "a") as f:
            f.write(line + "\n")

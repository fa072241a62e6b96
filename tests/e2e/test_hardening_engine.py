"""Issue 11, engine side: a writeup `length` the model's context cannot hold, and a clean
shutdown under load with the cache enabled. Loopback only; every wait is bounded."""
import asyncio
import json
import os
import signal
import subprocess
import threading
import time

import requests
import websockets

from conftest import DATA, PACKED_CACHE, SERVER_BIN, Redis

PATH = "/ws/async/writeup/text_generation/session/5f0c8a9e-7d1b-4e1c-a3f2-0d9b8c7a6e51/"


def new_request(prompt="Hello", **kw):
    msg = {"message_type": "new_request", "prompt": prompt, "temperature": 0.7, "top_k": 10, "top_p": 0,
           "length": 40, "batch_size": 2, "model_name": "tiny-gpt2", "seed": 7}
    msg.update(kw)
    return json.dumps(msg)


async def final_frame(ws, timeout=30):
    while True:
        frame = json.loads(await asyncio.wait_for(ws.recv(), timeout))["message"]
        if frame["message_type"] in ("completed_response", "error", "oom_response"):
            return frame


def expect_length_error(r):
    assert r.status_code == 400, (r.status_code, r.text)
    err = r.json()["error"]
    assert err["param"] == "length", err
    assert "length (100)" in err["message"] and "context is 64 tokens" in err["message"], err
    assert "at most 63" in err["message"], err


# Regression (defect 2): length 100 with the tiny model (context 64) made the truncation room
# negative and erase() ran past the end of the prompt: heap corruption, on every route.
def test_a_length_beyond_the_context_is_a_clear_400_on_every_route(server):
    form = {"prompt": "Hello", "length": "100"}
    expect_length_error(requests.post(server.url + "/v1/generate", data=form, timeout=30))
    expect_length_error(requests.post(server.url + "/tiny-gpt2", data=form, timeout=30))
    expect_length_error(requests.post(server.url + "/v1/generate", json={"prompt": "Hello", "length": 100},
                                      timeout=30))
    # curl, exactly as in the issue.
    out = subprocess.run(["curl", "-s", "-w", "\n%{http_code}", server.url + "/v1/generate",
                          "-d", "prompt=Hello&length=100"], capture_output=True, text=True, timeout=30).stdout
    body, status = out.rsplit("\n", 1)
    assert status == "400" and json.loads(body)["error"]["param"] == "length", out

    async def ws_route():
        async with websockets.connect(server.ws_url + PATH) as ws:
            await ws.send(new_request(length=100))
            bad = await final_frame(ws)
            # The same socket still serves, at the edge: 63 new tokens keep one prompt token.
            await ws.send(new_request(prompt="word " * 100, length=63, batch_size=1))
            good = await final_frame(ws)
            return bad, good
    bad, good = asyncio.run(ws_route())
    assert bad["message_type"] == "error", bad
    assert bad["error"]["field"] == "length" and "context is 64 tokens" in bad["error"]["message"], bad
    assert good["message_type"] == "completed_response", good
    assert good["length"] == 63
    # The server is alive and well.
    assert requests.get(server.url + "/health", timeout=10).status_code == 200
    assert requests.get(server.url + "/ready", timeout=10).status_code == 200
    r = requests.post(server.url + "/v1/generate", data={"prompt": "Hello", "length": "63", "batch_size": "1"},
                      timeout=30)
    assert r.status_code == 200 and r.json()["message"]["message_type"] == "completed_response", r.text


class LoggedServer:
    """writeup-server at log level info, its whole stdout kept (the shutdown log lines)."""

    def __init__(self, *args, env=None):
        cmd = [SERVER_BIN, "--host", "127.0.0.1", "--port", "0", "--log-level", "info",
               "--model", f"tiny-gpt2={DATA / 'tiny-gpt2'}", "--packed-cache", PACKED_CACHE, *args]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                     env={**os.environ, **(env or {})})
        self.lines = []
        self.url = None
        started = threading.Event()

        def pump():
            for line in self.proc.stdout:
                self.lines.append(line)
                if "listening on http://" in line and self.url is None:
                    self.url = line.strip().split()[-1]
                    started.set()
            started.set()
        self.reader = threading.Thread(target=pump, daemon=True)
        self.reader.start()
        assert started.wait(30) and self.url, "".join(self.lines)
        self.port = int(self.url.rsplit(":", 1)[1])
        deadline = time.time() + 30
        while requests.get(self.url + "/ready", timeout=5).status_code != 200:
            assert time.time() < deadline, "never ready"
            time.sleep(0.05)

    def output(self):
        self.reader.join(10)
        return "".join(self.lines)


# The context -> service -> cache -> flight -> session -> context cycle kept everything alive at
# exit with the cache thread running. Now: SIGTERM under load (streams running, identical
# requests joined in flight, Redis cache on) exits 0 and the context's destructor runs.
def test_sigterm_under_load_with_the_cache_exits_0_and_destroys_the_context():
    redis = Redis()
    s = LoggedServer("--redis", redis.url, env={"WRITEUP_TEST_STEP_DELAY_MS": "20"})
    try:
        async def client(i, first_frames):
            try:
                async with websockets.connect(f"ws://127.0.0.1:{s.port}{PATH}", open_timeout=10) as ws:
                    # Pairs of identical requests: the second joins the first's flight.
                    await ws.send(new_request(prompt=f"Request {i // 2} goes", length=60, seed=i // 2))
                    await asyncio.wait_for(ws.recv(), 30)
                    first_frames.append(i)
                    while True:  # until the server stops us
                        await asyncio.wait_for(ws.recv(), 30)
            except websockets.ConnectionClosed:
                return "closed"
            except OSError:
                return "refused"

        async def go():
            first_frames = []
            tasks = [asyncio.create_task(client(i, first_frames)) for i in range(12)]
            deadline = time.time() + 30
            while len(first_frames) < 6 and time.time() < deadline:
                await asyncio.sleep(0.05)
            assert len(first_frames) >= 6, "the load never got going"
            s.proc.send_signal(signal.SIGTERM)
            return await asyncio.wait_for(asyncio.gather(*tasks), 30)
        outcomes = asyncio.run(go())
        assert set(outcomes) <= {"closed", "refused"}, outcomes
        assert s.proc.wait(timeout=20) == 0
    finally:
        if s.proc.poll() is None:
            s.proc.kill()
            s.proc.wait()
        redis.kill()
    out = s.output()
    assert "shutting down" in out, out[-3000:]
    assert "server context destroyed" in out, out[-3000:]
    assert out.index("stopped") < out.index("server context destroyed"), out[-3000:]

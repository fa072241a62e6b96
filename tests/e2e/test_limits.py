"""Limits, timeouts, origins, static files and shutdown: each gets a clear answer and the
server (and other connections) go on."""
import asyncio
import concurrent.futures
import json
import pathlib
import socket
import tempfile
import time

import requests
import websockets

from conftest import Server, config

WS_PATH = "/ws/async/writeup/text_generation/session/abc-123/"


def new_request(**kw):
    msg = {"message_type": "new_request", "prompt": "Hello", "length": 20, "batch_size": 2}
    msg.update(kw)
    return json.dumps(msg)


def test_full_queue_answers_429_with_retry_after():
    s = Server(config=config(limits={"max_queue": 1}))
    try:
        # Distinct seeds: identical requests would share one generation instead of queueing.
        def body(i):
            return {"prompt": "The queue", "max_tokens": 60, "n": 10, "seed": i}
        with concurrent.futures.ThreadPoolExecutor(24) as pool:
            results = list(pool.map(lambda i: requests.post(s.url + "/v1/completions", json=body(i), timeout=60), range(24)))
        codes = [r.status_code for r in results]
        assert set(codes) <= {200, 429}, codes
        assert 429 in codes and 200 in codes, codes
        busy = next(r for r in results if r.status_code == 429)
        assert busy.headers["Retry-After"] == "1"
        assert busy.json()["error"]["code"] == "queue_full"
        assert requests.get(s.url + "/health").status_code == 200
    finally:
        assert s.stop() == 0


def test_too_many_connections_get_503_and_others_continue():
    s = Server(config=config(limits={"max_connections": 2}))
    try:
        async def go():
            async with websockets.connect(s.ws_url + WS_PATH) as a, websockets.connect(s.ws_url + WS_PATH) as b:
                refused = await asyncio.to_thread(requests.get, s.url + "/health")
                await a.send(new_request(length=3, batch_size=1))
                while json.loads(await a.recv())["message"]["message_type"] != "completed_response":
                    pass
                return refused
        refused = asyncio.run(go())
        assert refused.status_code == 503
        assert refused.json()["error"]["code"] == "too_many_connections"
        time.sleep(0.2)
        assert requests.get(s.url + "/health").status_code == 200
    finally:
        s.stop()


def test_idle_connections_time_out():
    s = Server(config=config(limits={"idle_timeout_s": 1}))
    try:
        with socket.create_connection(("127.0.0.1", s.port)) as sock:
            sock.settimeout(10)
            sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n")  # never finishes its headers
            t = time.time()
            assert sock.recv(100) == b""
            assert 0.5 < time.time() - t < 8
        assert requests.get(s.url + "/health").status_code == 200
    finally:
        s.stop()


def test_static_files_stay_inside_their_directory():
    with tempfile.TemporaryDirectory() as d:
        root = pathlib.Path(d) / "site"
        root.mkdir()
        (root / "index.html").write_text("<h1>writeup</h1>")
        (pathlib.Path(d) / "secret.txt").write_text("no")
        s = Server(config=config(server={"static_dir": str(root)}))
        try:
            r = requests.get(s.url + "/")
            assert r.status_code == 200 and r.text == "<h1>writeup</h1>"
            assert r.headers["Content-Type"].startswith("text/html")
            with socket.create_connection(("127.0.0.1", s.port)) as sock:
                sock.sendall(b"GET /../secret.txt HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                reply = sock.recv(4096).decode()
            assert reply.startswith("HTTP/1.1 404"), reply
            assert "no" != reply.split("\r\n\r\n", 1)[1]
        finally:
            s.stop()


def test_origins_are_checked_on_upgrade():
    s = Server(config=config(server={"allowed_origins": ["https://writeup.example"]}))
    try:
        async def go(origin):
            async with websockets.connect(s.ws_url + WS_PATH, origin=origin) as ws:
                await ws.send(new_request(length=2, batch_size=1))
                return json.loads(await ws.recv())["message"]["message_type"]
        assert asyncio.run(go("https://writeup.example")) in ("updated_response", "completed_response")
        try:
            asyncio.run(go("https://evil.example"))
            raise AssertionError("upgrade from a foreign origin was accepted")
        except websockets.exceptions.InvalidStatusCode as e:
            assert e.status_code == 403
    finally:
        s.stop()


def test_oversized_websocket_messages_close_only_that_connection():
    s = Server(config=config(limits={"max_ws_message_bytes": 1000}))
    try:
        async def go():
            async with websockets.connect(s.ws_url + WS_PATH) as other:
                async with websockets.connect(s.ws_url + WS_PATH) as ws:
                    await ws.send(new_request(prompt="x" * 5000))
                    try:
                        await asyncio.wait_for(ws.recv(), 10)
                        raise AssertionError("no close")
                    except websockets.exceptions.ConnectionClosed as e:
                        code = e.code
                await other.send(new_request(length=3, batch_size=1))
                while True:
                    m = json.loads(await other.recv())["message"]
                    if m["message_type"] == "completed_response":
                        return code
        assert asyncio.run(go()) == 1009
    finally:
        s.stop()


def test_shutdown_closes_websockets_with_a_close_frame():
    s = Server()

    async def go():
        async with websockets.connect(s.ws_url + WS_PATH) as ws:
            await ws.send(new_request(length=60, batch_size=10))
            await asyncio.sleep(0.05)
            s.proc.terminate()
            try:
                while True:
                    await asyncio.wait_for(ws.recv(), 10)
            except websockets.exceptions.ConnectionClosed as e:
                return e.code
    t = time.time()
    code = asyncio.run(go())
    assert code == 1001
    assert s.proc.wait(timeout=10) == 0
    assert time.time() - t < 6


def test_out_of_memory_fails_only_that_request_and_the_server_stays_ready():
    s = Server(env={"WRITEUP_TEST_OOM_OVER_TOKENS": "16"})
    try:
        long_prompt = "one two three four five six seven eight nine ten eleven twelve thirteen fourteen " * 2

        async def go():
            async with websockets.connect(s.ws_url + WS_PATH) as ws:
                await ws.send(new_request(prompt=long_prompt, length=5, batch_size=2))
                while True:
                    m = json.loads(await ws.recv())["message"]
                    if m["message_type"] != "updated_response":
                        break
                await ws.send(new_request(prompt="short", length=5, batch_size=2))
                while True:
                    ok = json.loads(await ws.recv())["message"]
                    if ok["message_type"] != "updated_response":
                        return m, ok
        oom, ok = asyncio.run(go())
        assert oom["message_type"] == "oom_response"
        assert oom["prompt"] == long_prompt and oom["text_0"] and "text_1" in oom
        assert ok["message_type"] == "completed_response"
        r = requests.post(s.url + "/v1/completions", json={"prompt": long_prompt, "max_tokens": 3})
        assert r.status_code == 503 and r.json()["error"]["code"] == "out_of_memory"
        assert requests.post(s.url + "/v1/completions", json={"prompt": "short", "max_tokens": 3}).status_code == 200
        assert requests.get(s.url + "/ready").status_code == 200
        metrics = requests.get(s.url + "/metrics").text
        line = next(l for l in metrics.splitlines() if l.startswith("writeup_oom_total{"))
        assert float(line.split()[-1]) >= 2
    finally:
        s.stop()

"""One log line per request (issue 13, Request logs), read from the server's output, as text
(the default) and as JSON lines (log_format "json")."""
import asyncio
import json
import re
import time

import requests
import websockets

from conftest import Server, config


def wait_for(server, pred, timeout=10):
    """The log lines (request ones) once pred(lines) holds; bounded by count and time."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        lines = [l for l in list(server.output) if "request id=" in l or '"event":"request"' in l]
        if pred(lines):
            return lines
        time.sleep(0.05)
    raise AssertionError(f"log lines never matched: {server.output[-20:]!r}")


def fields(line):
    return dict(re.findall(r"(\w+)=(\S+)", line[line.index("request id="):]))


def test_text_lines_for_http_and_websocket():
    s = Server("--log-level", "info")
    try:
        r = requests.post(s.url + "/v1/completions", json={"prompt": "Hello there", "max_tokens": 5, "temperature": 0},
                          headers={"X-Request-Id": "log-one"})
        assert r.status_code == 200
        answer = r.json()
        requests.post(s.url + "/v1/completions", json={"prompt": "Hello there", "max_tokens": 5, "temperature": 0},
                      headers={"X-Request-Id": "log-two"})
        requests.post(s.url + "/v1/completions", json={"prompt": "Hi", "max_tokens": 4, "stream": True, "seed": 1},
                      headers={"X-Request-Id": "log-sse"})
        requests.post(s.url + "/v1/completions", json={"prompt": 5}, headers={"X-Request-Id": "log-bad"})
        requests.post(s.url + "/v1/chat/completions", json={"messages": [{"role": "user", "content": "Hi"}],
                                                            "max_tokens": 3}, headers={"X-Request-Id": "log-chat"})
        for _ in range(3):
            requests.get(s.url + "/health", headers={"X-Request-Id": "log-probe"})

        async def ws():
            async with websockets.connect(s.ws_url + "/ws/async/writeup/text_generation/session/logs/") as c:
                await c.send(json.dumps({"message_type": "new_request", "prompt": "It was a dark night",
                                         "length": 6, "batch_size": 2, "seed": 4}))
                for _ in range(50):
                    m = json.loads(await asyncio.wait_for(c.recv(), 10))["message"]
                    if m["message_type"] != "updated_response":
                        break
                await c.send(json.dumps({"message_type": "new_request", "prompt": "", "length": 6}))
                await asyncio.wait_for(c.recv(), 10)
        asyncio.run(ws())

        lines = wait_for(s, lambda ls: sum("protocol=ws" in l for l in ls) >= 2 and any("id=log-chat" in l for l in ls))
        by_id = {fields(l)["id"]: fields(l) for l in lines if "protocol=http" in l}
        one, two = by_id["log-one"], by_id["log-two"]
        assert one["route"] == "/v1/completions" and one["model"] == "tiny-gpt2"
        assert one["prompt_tokens"] == str(answer["usage"]["prompt_tokens"])
        assert one["generated_tokens"] == str(answer["usage"]["completion_tokens"])
        assert one["status"] == "200" and one["finish"] == answer["choices"][0]["finish_reason"]
        assert one["cache"] == "miss" and two["cache"] == "hit"
        for f in (one, two):
            assert float(f["queue_ms"]) <= float(f["total_ms"])
        assert by_id["log-sse"]["cache"] == "miss" and by_id["log-sse"]["status"] == "200"
        assert 0 < int(by_id["log-sse"]["generated_tokens"]) <= 4
        assert by_id["log-bad"]["status"] == "400"
        assert by_id["log-chat"]["route"] == "/v1/chat/completions" and by_id["log-chat"]["status"] == "200"
        # Probes log at debug only.
        assert "log-probe" not in by_id
        ws_lines = [fields(l) for l in lines if "protocol=ws" in l]
        done = [f for f in ws_lines if "generated_tokens" in f]
        assert done and done[0]["model"] == "tiny-gpt2" and done[0]["finish"] in ("length", "stop", "length,stop")
        assert 0 < int(done[0]["generated_tokens"]) <= 12
        assert done[0]["cache"] in ("miss", "hit")
        assert any(f.get("finish") == "invalid_value" for f in ws_lines)
        # Every info line is one line per request: no request was logged twice.
        http_ids = [fields(l)["id"] for l in lines if "protocol=http" in l]
        assert len(http_ids) == len(set(http_ids))
    finally:
        s.stop()


def test_json_lines_and_debug_probes():
    s = Server("--log-level", "debug", config=config(log_format="json"))
    try:
        requests.post(s.url + "/v1/generate", json={"prompt": "Hello", "length": 3, "batch_size": 1},
                      headers={"X-Request-Id": "json-gen"})
        requests.get(s.url + "/health", headers={"X-Request-Id": "json-probe"})
        lines = wait_for(s, lambda ls: any("json-probe" in l for l in ls) and any("json-gen" in l for l in ls))
        records = {}
        for l in lines:
            j = json.loads(l)  # the whole line is JSON
            records[j["id"]] = j
        gen = records["json-gen"]
        assert gen["event"] == "request" and gen["route"] == "/v1/generate" and gen["protocol"] == "http"
        assert gen["model"] == "tiny-gpt2" and 0 < gen["generated_tokens"] <= 3 and gen["status"] == 200
        assert gen["cache"] in ("miss", "hit") and gen["queue_ms"] <= gen["total_ms"]
        probe = records["json-probe"]
        assert probe["route"] == "/health" and probe["model"] is None and probe["status"] == 200
    finally:
        s.stop()


def test_a_stdout_nobody_reads_never_blocks_requests():
    """Request lines go through a queue that drops the oldest when stdout is full: with the
    server's stdout pipe never read after start-up (64 KiB fill up after a few hundred lines),
    every request is still answered."""
    import subprocess
    from conftest import SERVER_BIN, DATA, PACKED_CACHE
    proc = subprocess.Popen([SERVER_BIN, "--host", "127.0.0.1", "--port", "0", "--log-level", "info",
                             "--model", f"tiny-gpt2={DATA / 'tiny-gpt2'}", "--packed-cache", PACKED_CACHE],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        url = None
        for _ in range(50):
            line = proc.stdout.readline()
            if "listening on" in line:
                url = line.strip().split()[-1]
                break
        assert url, "no listening line"
        deadline = time.monotonic() + 60
        while requests.get(url + "/ready", timeout=5).status_code != 200:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        # From here on nobody reads the pipe.
        with requests.Session() as http:
            for i in range(1500):
                r = http.post(url + "/v1/tokenize", json={"prompt": "x" * 200}, timeout=10,
                              headers={"X-Request-Id": f"fill-{i:04d}-" + "p" * 100})
                assert r.status_code == 200, i
    finally:
        proc.kill()
        proc.wait()

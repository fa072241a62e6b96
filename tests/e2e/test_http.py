"""HTTP routes of writeup-server, exercised with requests and curl as real clients."""
import asyncio
import json
import subprocess

import requests
import websockets

from conftest import DATA, ROOT, Server


def post(server, path, body, **kw):
    return requests.post(server.url + path, json=body, timeout=30, **kw)


def sse_events(response):
    events = []
    for raw in response.iter_lines():
        line = raw.decode("utf-8")  # SSE is always UTF-8
        if line.startswith("data: "):
            events.append(line[len("data: "):])
    return events


def test_health_ready_models(server):
    assert requests.get(server.url + "/health").json() == {"status": "ok"}
    assert requests.get(server.url + "/ready").status_code == 200
    models = requests.get(server.url + "/v1/models").json()
    assert models["object"] == "list"
    assert [m["id"] for m in models["data"]] == ["tiny-gpt2"]
    assert models["data"][0]["context_length"] == 64
    assert "notice" not in models["data"][0]


def test_model_notice_is_shown_in_models():
    cfg = json.loads((ROOT / "config" / "local.json").read_text())
    cfg["models"][0]["path"] = str(DATA / "tiny-gpt2")
    s = Server(config=cfg)
    try:
        m = requests.get(s.url + "/v1/models").json()["data"][0]
        assert m["notice"].startswith("random weights")
        assert "fetch-model" in m["notice"]
    finally:
        s.stop()


def test_greedy_completion_matches_transformers(server, golden):
    fox = golden["fox"]
    r = post(server, "/v1/completions", {"model": "tiny-gpt2", "prompt": fox["text"],
                                         "max_tokens": len(fox["greedy_new_ids"]), "temperature": 0})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["object"] == "text_completion"
    assert body["choices"][0]["text"] == fox["greedy_new_text"]
    assert body["choices"][0]["finish_reason"] == "length"
    assert body["usage"] == {"prompt_tokens": len(fox["ids"]), "completion_tokens": 24, "total_tokens": len(fox["ids"]) + 24}


def test_seeded_completions_repeat_and_stream_the_same_text(server):
    req = {"prompt": "Once upon a time", "max_tokens": 20, "n": 3, "seed": 7, "top_k": 40, "temperature": 0.9}
    a = post(server, "/v1/completions", req).json()
    b = post(server, "/v1/completions", req).json()
    assert [c["text"] for c in a["choices"]] == [c["text"] for c in b["choices"]]
    assert len({c["text"] for c in a["choices"]}) == 3
    with requests.post(server.url + "/v1/completions", json={**req, "stream": True}, stream=True, timeout=30) as r:
        assert r.status_code == 200
        assert r.headers["Content-Type"].startswith("text/event-stream")
        events = sse_events(r)
    assert events[-1] == "[DONE]"
    texts, finish = ["", "", ""], [None, None, None]
    for e in events[:-1]:
        choice = json.loads(e)["choices"][0]
        texts[choice["index"]] += choice["text"]
        if choice["finish_reason"]:
            finish[choice["index"]] = choice["finish_reason"]
    assert texts == [c["text"] for c in a["choices"]]
    assert finish == ["length"] * 3


def test_stop_strings_are_cut_in_both_modes(server, golden):
    hello = golden["hello"]  # greedy: " Ts analges analgesヴヴヴ 249 ..."
    req = {"prompt": hello["text"], "max_tokens": 24, "temperature": 0, "stop": ["ヴ"]}
    body = post(server, "/v1/completions", req).json()
    assert body["choices"][0]["text"] == " Ts analges analges"
    assert body["choices"][0]["finish_reason"] == "stop"
    with requests.post(server.url + "/v1/completions", json={**req, "stream": True}, stream=True) as r:
        events = sse_events(r)
    streamed = "".join(json.loads(e)["choices"][0]["text"] for e in events[:-1])
    assert streamed == " Ts analges analges"


def test_curl_one_shot_and_sse(server):
    out = subprocess.run(["curl", "-sS", server.url + "/v1/completions", "-H", "Content-Type: application/json",
                          "-d", '{"prompt":"Hello","max_tokens":3}'], capture_output=True, text=True, check=True)
    assert len(json.loads(out.stdout)["choices"]) == 1
    out = subprocess.run(["curl", "-sSN", server.url + "/v1/completions", "-d",
                          '{"prompt":"Hello","max_tokens":3,"stream":true}'], capture_output=True, text=True, check=True)
    assert out.stdout.rstrip().endswith("data: [DONE]")


def test_writeup_fields_over_http_json_form_and_model_path(server):
    fields = {"prompt": "Hello world", "length": 10, "batch_size": 2, "seed": 5}
    a = post(server, "/v1/generate", fields).json()["message"]
    b = requests.post(server.url + "/v1/generate", data={k: str(v) for k, v in fields.items()}).json()["message"]
    c = requests.post(server.url + "/tiny-gpt2", data={k: str(v) for k, v in fields.items()}).json()["message"]
    assert a["message_type"] == "completed_response"
    assert sorted(k for k in a if "text_" in k) == ["text_0", "text_1"]
    assert a["prompt"] == "Hello world"
    for k in ("text_0", "text_1"):
        assert a[k] == b[k] == c[k]
        assert a[k] == a[k].strip()


def test_tokenize_and_detokenize_agree_with_the_fixtures(server):
    case = json.loads((DATA / "dev_tokens.json").read_text())["cases"][5]
    r = post(server, "/v1/tokenize", {"prompt": case["text"]}).json()
    assert r["tokens"] == case["ids"]
    assert post(server, "/v1/detokenize", {"tokens": case["ids"]}).json()["text"] == case["text"]


def expect_error(r, status, param=None, code=None):
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert set(err) == {"message", "type", "param", "code"}
    assert err["message"]
    if param is not None:
        assert err["param"] == param
    if code is not None:
        assert err["code"] == code
    return err


def test_bad_input_gets_clear_errors(server):
    url = server.url + "/v1/completions"
    expect_error(requests.post(url, data="{not json"), 400, code="invalid_json")
    expect_error(requests.post(url, data="[1,2]"), 400, code="invalid_json")
    expect_error(post(server, "/v1/completions", {"prompt": 5}), 400, param="prompt")
    expect_error(post(server, "/v1/completions", {"prompt": "hi", "temperature": 3}), 400, param="temperature")
    expect_error(post(server, "/v1/completions", {"prompt": "hi", "max_tokens": 0}), 400, param="max_tokens")
    expect_error(post(server, "/v1/completions", {"prompt": "hi", "n": 11}), 400, param="n")
    expect_error(post(server, "/v1/completions", {"prompt": "hi", "stop": ["a", "b", "c", "d", "e"]}), 400, param="stop")
    expect_error(post(server, "/v1/completions", {"prompt": "hi", "bogus": 1}), 400, param="bogus")
    expect_error(post(server, "/v1/completions", {"prompt": "hi", "model": "nope"}), 404, code="model_not_found")
    expect_error(post(server, "/v1/completions", {"prompt": "word " * 80, "max_tokens": 10}), 400,
                 code="context_length_exceeded")
    expect_error(requests.post(url, data=b'{"prompt":"\xff"}'), 400)
    expect_error(requests.get(server.url + "/nowhere"), 404, code="not_found")
    expect_error(requests.get(url), 405)
    expect_error(requests.post(url, data="x" * (2 << 20)), 413, code="body_too_large")
    expect_error(post(server, "/v1/generate", {"prompt": "   "}), 400, param="prompt")
    expect_error(post(server, "/v1/generate", {"prompt": "hi", "batch_size": 11}), 400, param="batch_size")
    expect_error(post(server, "/v1/detokenize", {"tokens": [50257]}), 400, param="tokens")
    # The server is still fine.
    assert requests.get(server.url + "/health").status_code == 200


def test_oversized_headers_are_refused(server):
    r = requests.get(server.url + "/health", headers={"X-Big": "a" * 20000})
    assert r.status_code == 431


def test_metrics_pass_promtool_and_count_requests(server):
    post(server, "/v1/completions", {"prompt": "hi", "max_tokens": 2})
    text = requests.get(server.url + "/metrics").text
    assert 'writeup_requests_total{route="/v1/completions",status="200"}' in text
    assert "writeup_tokens_generated_total" in text
    assert "writeup_time_to_first_token_seconds_bucket" in text
    check = subprocess.run(["promtool", "check", "metrics"], input=text, capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr


def test_api_keys_are_required_when_configured():
    s = Server("--api-key", "sekret")
    try:
        expect_error(requests.post(s.url + "/v1/completions", json={"prompt": "hi"}), 401, code="missing_api_key")
        expect_error(requests.post(s.url + "/v1/completions", json={"prompt": "hi"},
                                   headers={"Authorization": "Bearer wrong"}), 401, code="invalid_api_key")
        ok = requests.post(s.url + "/v1/completions", json={"prompt": "hi", "max_tokens": 2},
                           headers={"Authorization": "Bearer sekret"})
        assert ok.status_code == 200
        assert requests.get(s.url + "/health").status_code == 200

        async def ws(url, **fields):
            async with websockets.connect(url) as sock:
                msg = {"message_type": "new_request", "prompt": "hi", "length": 2, "batch_size": 1, **fields}
                await sock.send(json.dumps(msg))
                return json.loads(await sock.recv())["message"]
        path = "/ws/async/writeup/text_generation/session/k1/"
        denied = asyncio.run(ws(s.ws_url + path))
        assert denied["message_type"] == "error" and denied["error"]["code"] == "missing_api_key"
        assert asyncio.run(ws(s.ws_url + path, api_key="sekret"))["message_type"] != "error"
        assert asyncio.run(ws(s.ws_url + path + "?api_key=sekret"))["message_type"] != "error"
    finally:
        assert s.stop() == 0


def test_sigterm_stops_cleanly_and_quickly():
    s = Server()
    import time
    t = time.time()
    assert s.stop(timeout=10) == 0
    assert time.time() - t < 5


def test_a_model_is_retrieved_by_id_with_its_creation_time(server):
    models = requests.get(server.url + "/v1/models").json()["data"]
    assert models[0]["created"] > 1_000_000_000  # when its weights were written, not 0
    one = requests.get(server.url + "/v1/models/tiny-gpt2")
    assert one.status_code == 200
    assert one.json() == models[0]
    missing = requests.get(server.url + "/v1/models/nope")
    assert missing.status_code == 404
    err = missing.json()["error"]
    assert err["code"] == "model_not_found" and err["type"] == "invalid_request_error"  # as OpenAI answers


def test_405_names_the_allowed_methods(server):
    r = requests.delete(server.url + "/v1/models")
    assert r.status_code == 405 and r.headers["Allow"] == "GET, HEAD"
    r = requests.get(server.url + "/v1/completions")
    assert r.status_code == 405 and r.headers["Allow"] == "POST"
    r = requests.post(server.url + "/v1/models/tiny-gpt2")
    assert r.status_code == 405 and r.headers["Allow"] == "GET, HEAD"


def test_unseeded_completions_draw_fresh_seeds_and_seeded_ones_repeat(server):
    body = {"prompt": "Once upon a time", "max_tokens": 24, "temperature": 1.0, "n": 2}
    texts = [[c["text"] for c in post(server, "/v1/completions", body).json()["choices"]] for _ in range(3)]
    # Each unseeded request samples with its own seed (not the configured default, not the cache).
    assert texts[0] != texts[1] and texts[1] != texts[2] and texts[0] != texts[2]
    seeded = dict(body, seed=11)
    a = post(server, "/v1/completions", seeded).json()["choices"]
    b = post(server, "/v1/completions", seeded).json()["choices"]
    assert [c["text"] for c in a] == [c["text"] for c in b]
    greedy = dict(body, temperature=0, n=1)  # any seed gives the same text: still one answer
    assert post(server, "/v1/completions", greedy).json()["choices"] == post(server, "/v1/completions", greedy).json()["choices"]

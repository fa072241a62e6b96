"""Model aliases (models[].aliases): the original editor's names for the shipped models. Every route
accepts an alias; /v1/models lists them; the WebSocket's frames carry the name the request used,
the OpenAI-style answers the canonical name; a name and its alias share the cache."""
import asyncio
import json

import pytest
import requests
import websockets

from conftest import DATA, Server

SOCKET = "/ws/async/writeup/text_generation/session/a11a5e5-0000-4000-8000-000000000001/"


@pytest.fixture(scope="module")
def aliased():
    cfg = {"models": [
        {"name": "gpt2-medium", "path": str(DATA / "tiny-gpt2"), "aliases": ["gpt2-medium-companies"],
         "notice": "also answers gpt2-medium-companies"},
        {"name": "gpt2-medium-harry-potter", "path": str(DATA / "tiny-gpt2"), "aliases": ["gpt2-medium-hp"]},
    ], "defaults": {"model": "gpt2-medium"}}
    s = Server(config=cfg)
    yield s
    s.stop()


def test_models_lists_each_models_aliases(aliased):
    data = requests.get(aliased.url + "/v1/models", timeout=10).json()["data"]
    assert [(m["id"], m["aliases"]) for m in data] == [
        ("gpt2-medium", ["gpt2-medium-companies"]), ("gpt2-medium-harry-potter", ["gpt2-medium-hp"])]
    one = requests.get(aliased.url + "/v1/models/gpt2-medium-hp", timeout=10)
    assert one.status_code == 200 and one.json()["id"] == "gpt2-medium-harry-potter"


def test_http_routes_accept_an_alias_and_answer_the_canonical_name(aliased):
    body = {"model": "gpt2-medium-hp", "prompt": "The wand", "max_tokens": 4, "temperature": 0}
    r = requests.post(aliased.url + "/v1/completions", json=body, timeout=30)
    assert r.status_code == 200, r.text
    assert r.json()["model"] == "gpt2-medium-harry-potter"
    by_name = requests.post(aliased.url + "/v1/completions", json={**body, "model": "gpt2-medium-harry-potter"},
                            timeout=30).json()
    assert by_name["choices"][0]["text"] == r.json()["choices"][0]["text"]
    tok = requests.post(aliased.url + "/v1/tokenize", json={"model": "gpt2-medium-hp", "prompt": "The wand"}, timeout=10)
    assert tok.status_code == 200 and tok.json()["model"] == "gpt2-medium-harry-potter"
    # POST /{model}, the original backend's model-service call, by alias
    fields = {"prompt": "The wand", "length": "5", "batch_size": "2"}
    m = requests.post(aliased.url + "/gpt2-medium-hp", data=fields, timeout=30).json()["message"]
    assert m["message_type"] == "completed_response"
    assert sorted(k for k in m if "text_" in k) == ["text_0", "text_1"]
    unknown = requests.post(aliased.url + "/v1/completions", json={**body, "model": "gpt2-medium-h"}, timeout=10)
    assert unknown.status_code == 404 and unknown.json()["error"]["code"] == "model_not_found"


def test_websocket_frames_carry_the_name_sent_and_share_the_cache(aliased):
    async def ask(ws, name):
        await ws.send(json.dumps({"message_type": "new_request", "prompt": "The castle", "length": 6,
                                  "batch_size": 3, "model_name": name}))
        for _ in range(200):
            m = json.loads(await asyncio.wait_for(ws.recv(), 30))["message"]
            if m["message_type"] != "updated_response":
                return m
        pytest.fail("no final frame")

    async def go():
        async with websockets.connect(aliased.ws_url + SOCKET) as ws:
            return [await ask(ws, n) for n in ("gpt2-medium-harry-potter", "gpt2-medium-hp", "gpt2-medium-companies")]

    canonical, alias, companies = asyncio.run(go())
    for m in (canonical, alias, companies):
        assert m["message_type"] == "completed_response", m
    assert canonical["model_name"] == "gpt2-medium-harry-potter"
    assert alias["model_name"] == "gpt2-medium-hp"
    assert companies["model_name"] == "gpt2-medium-companies"
    # the same model and request: one cache entry, the same suggestions
    assert alias["cache_key"] == canonical["cache_key"]
    assert [alias[f"text_{i}"] for i in range(3)] == [canonical[f"text_{i}"] for i in range(3)]
    assert companies["cache_key"] != canonical["cache_key"]

"""The two frame fields the editor page needs (issue 14): `request_id`, the client's name for a
request echoed in every frame answering it, and `cache`, where the answer came from."""
import asyncio
import json
import uuid

import requests
import websockets

from test_websocket import PATH, frames_until_final, request, run


async def frames_of(ws, *messages, timeout=30):
    for m in messages:
        await ws.send(m)
    return await frames_until_final(ws, timeout)


def test_requests_differing_only_in_temperature_are_told_apart(server):
    async def go():
        async with websockets.connect(server.ws_url + PATH) as ws:
            await ws.send(request("The river", length=60, batch_size=10, temperature=0.7, request_id="a"))
            first = json.loads(await asyncio.wait_for(ws.recv(), 30))["message"]
            # Same prompt, length, batch, model and seed: only the request_id tells the frames apart.
            return [first] + await frames_of(ws, request("The river", length=60, batch_size=10, temperature=0.9, request_id="b"))
    frames = run(go())
    ids = [f["request_id"] for f in frames]
    assert set(ids) <= {"a", "b"}, ids
    assert ids[-1] == "b" and frames[-1]["message_type"] == "completed_response"
    first_b = ids.index("b")
    assert all(i == "b" for i in ids[first_b:]), ids  # nothing of the superseded request after it


def test_a_repeated_request_is_a_cache_hit_and_says_so(server):
    prompt = "Cache me " + uuid.uuid4().hex

    async def go():
        async with websockets.connect(server.ws_url + PATH) as ws:
            first = await frames_of(ws, request(prompt, length=30, seed=7, request_id="c1"))
            second = await frames_of(ws, request(prompt, length=30, seed=7, request_id="c2"))
            return first, second
    first, second = run(go())
    assert {f["cache"] for f in first} == {"miss"}, first
    assert all(f["request_id"] == "c1" for f in first)
    assert len(second) == 1, second  # a hit is one completed_response
    hit = second[0]
    assert hit["message_type"] == "completed_response" and hit["cache"] == "hit" and hit["request_id"] == "c2"
    assert [hit[f"text_{i}"] for i in range(3)] == [first[-1][f"text_{i}"] for i in range(3)]


def test_cancelled_and_error_frames_name_their_request(server):
    async def go():
        async with websockets.connect(server.ws_url + PATH) as ws:
            cancelled = await frames_of(ws, request("Stop", length=60, batch_size=10, request_id="k1"),
                                        json.dumps({"message_type": "cancel_request"}))
            bad_field = await frames_of(ws, request("Bad", top_k=99, request_id="k2"))
            bad_id = await frames_of(ws, request("Bad id", request_id="no spaces allowed"))
            no_id = await frames_of(ws, request("No id", length=5))
            return cancelled, bad_field, bad_id, no_id
    cancelled, bad_field, bad_id, no_id = run(go())
    assert cancelled[-1]["message_type"] == "completed_response" and cancelled[-1]["cancelled"] is True
    assert all(f["request_id"] == "k1" for f in cancelled)
    assert bad_field[-1]["message_type"] == "error" and bad_field[-1]["request_id"] == "k2"
    assert bad_field[-1]["error"]["field"] == "top_k"
    err = bad_id[-1]
    assert err["message_type"] == "error" and err["error"]["field"] == "request_id" and err["request_id"] is None
    assert "request_id" in err["error"]["message"]
    assert no_id[-1]["message_type"] == "completed_response" and no_id[-1]["request_id"] is None
    assert no_id[-1]["cache"] in ("miss", "hit")


def test_http_generate_carries_both_fields(server):
    body = {"prompt": "Over HTTP " + uuid.uuid4().hex, "length": 8, "batch_size": 2, "request_id": "h1"}
    first = requests.post(server.url + "/v1/generate", json=body, timeout=30).json()["message"]
    again = requests.post(server.url + "/v1/generate", json={**body, "request_id": "h2"}, timeout=30).json()["message"]
    assert (first["request_id"], first["cache"]) == ("h1", "miss")
    assert (again["request_id"], again["cache"]) == ("h2", "hit")
    assert first["text_0"] == again["text_0"]

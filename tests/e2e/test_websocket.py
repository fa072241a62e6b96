"""The writeup editor's WebSocket protocol, with the python `websockets` client."""
import asyncio
import json
import re

import websockets

PATH = "/ws/async/writeup/text_generation/session/0b6e6a1c-3a59-4a4c-9f1e-3b2f1d7c9e11/"


def request(prompt="The writing editor suggests", **kw):
    msg = {"message_type": "new_request", "prompt": prompt, "temperature": 0.7, "top_k": 10, "top_p": 0,
           "length": 40, "batch_size": 3, "model_name": "tiny-gpt2", "seed": 42}
    msg.update(kw)
    return json.dumps(msg)


async def frames_until_final(ws, timeout=30):
    frames = []
    while True:
        frame = json.loads(await asyncio.wait_for(ws.recv(), timeout))["message"]
        frames.append(frame)
        if frame["message_type"] in ("completed_response", "error", "oom_response"):
            return frames


def text_keys(frame):
    return sorted((k for k in frame if "text_" in k), key=lambda k: int(k.split("_")[1]))


def run(coro):
    return asyncio.run(coro)


def test_streams_updates_every_five_words_then_completes(server):
    async def go():
        async with websockets.connect(server.ws_url + PATH) as ws:
            await ws.send(request(length=40, batch_size=3))
            return await frames_until_final(ws)
    frames = run(go())
    assert frames[-1]["message_type"] == "completed_response"
    assert len(frames) >= 2, "40 tokens of 3 suggestions must produce updates"
    for f in frames:
        assert f["prompt"] == "The writing editor suggests"
        assert text_keys(f) == ["text_0", "text_1", "text_2"]
        assert all(re.fullmatch(r"text_\d", k) for k in text_keys(f))
        for k in text_keys(f):
            assert f[k] == f[k].strip()
            assert "<|endoftext|>" not in f[k]
        assert f["model_name"] == "tiny-gpt2" and f["seed"] == 42 and f["length"] == 40
    # Cadence: each update has some suggestion at least 5 words longer than in the previous frame.
    prev = [0, 0, 0]
    for f in frames[:-1]:
        assert f["message_type"] == "updated_response"
        words = [len(f[k].split()) for k in text_keys(f)]
        assert any(w - p >= 5 for w, p in zip(words, prev)), (words, prev)
        prev = words
    # Suggestions only grow.
    for a, b in zip(frames, frames[1:]):
        for k in text_keys(a):
            assert b[k].startswith(a[k][: max(0, len(a[k]) - 1)].rstrip()) or not a[k]


def test_same_seed_same_suggestions_over_websocket_and_http(server):
    async def go():
        async with websockets.connect(server.ws_url + PATH) as ws:
            await ws.send(request(prompt="Hello world", length=10, batch_size=2, seed=5))
            return (await frames_until_final(ws))[-1]
    final = run(go())
    import requests
    http = requests.post(server.url + "/v1/generate", json={"prompt": "Hello world", "length": 10,
                                                            "batch_size": 2, "seed": 5}).json()["message"]
    assert final["text_0"] == http["text_0"] and final["text_1"] == http["text_1"]


def test_errors_come_as_frames_and_keep_the_socket_open(server):
    async def go():
        async with websockets.connect(server.ws_url + PATH) as ws:
            await ws.send("{not json")
            bad_json = json.loads(await ws.recv())["message"]
            await ws.send(request(temperature=5))
            bad_temp = json.loads(await ws.recv())["message"]
            await ws.send(request(prompt="   "))
            blank = json.loads(await ws.recv())["message"]
            await ws.send(request(model_name="nope"))
            unknown = json.loads(await ws.recv())["message"]
            await ws.send(b"\x00\x01binary")
            binary = json.loads(await ws.recv())["message"]
            await ws.send(request(length=5, batch_size=1))
            ok = await frames_until_final(ws)
            return bad_json, bad_temp, blank, unknown, binary, ok
    bad_json, bad_temp, blank, unknown, binary, ok = run(go())
    for f in (bad_json, bad_temp, blank, unknown, binary):
        assert f["message_type"] == "error"
        assert "prompt" in f and f["text_0"]
        assert set(f["error"]) == {"code", "message", "field"}
    assert bad_temp["error"]["field"] == "temperature"
    assert text_keys(bad_temp) == ["text_0", "text_1", "text_2"]
    assert blank["error"]["field"] == "prompt"
    assert unknown["error"]["code"] == "model_not_found"
    assert ok[-1]["message_type"] == "completed_response"


def test_cancel_request_and_supersede(server):
    async def go():
        async with websockets.connect(server.ws_url + PATH) as ws:
            await ws.send(request(prompt="first", length=60, batch_size=10))
            await ws.send(json.dumps({"message_type": "cancel_request"}))
            cancelled = await frames_until_final(ws)
            await ws.send(request(prompt="old", length=60, batch_size=10))
            await ws.send(request(prompt="new", length=5, batch_size=1))
            frames = await frames_until_final(ws)
            while frames[-1]["prompt"] != "new":
                frames = await frames_until_final(ws)
            return cancelled, frames
    cancelled, frames = run(go())
    assert cancelled[-1]["message_type"] == "completed_response"
    assert cancelled[-1]["prompt"] == "first" and cancelled[-1].get("cancelled") is True
    assert frames[-1]["message_type"] == "completed_response"
    assert frames[-1]["prompt"] == "new"


def test_long_documents_are_left_truncated(server):
    async def go():
        async with websockets.connect(server.ws_url + PATH) as ws:
            await ws.send(request(prompt="word " * 500, length=20, batch_size=1))
            return await frames_until_final(ws)
    frames = run(go())
    assert frames[-1]["message_type"] == "completed_response"
    assert frames[-1]["completed"] > 0


def test_unknown_websocket_path_is_404(server):
    import requests
    r = requests.get(server.url + "/ws/async/other/", headers={"Connection": "Upgrade", "Upgrade": "websocket"})
    assert r.status_code == 404


def test_a_prompt_starting_inside_an_emoji_is_served(server):
    # The original editor sends the document's last 500 characters: cut inside an emoji, the
    # frame starts its prompt with a lone low surrogate escape (raw text: json.dumps would
    # refuse nothing, but we must send exactly what the editor's JSON.stringify sends).
    frame = request(length=5, batch_size=2).replace('"prompt": "The writing editor suggests"',
                                                    '"prompt": "\\ude00 The writing editor suggests"')
    assert "\\ude00" in frame

    async def go():
        async with websockets.connect(server.ws_url + PATH) as ws:
            await ws.send(frame)
            return await frames_until_final(ws)
    frames = run(go())
    final = frames[-1]
    assert final["message_type"] == "completed_response", final
    assert final["prompt"] == "\ufffd The writing editor suggests"
    assert text_keys(final) == ["text_0", "text_1"]

"""Replays what the original writeup.ai React editor (jeffshek/writeup-frontend) sends over its one
WebSocket, against a server started with the shipped config/server.json (its models, names and
aliases; the tiny fixture model's weights in place of each model's), and checks what the editor
needs from every frame it gets back (issue 13):

- the frame is {"message": {...}} and nothing else;
- `prompt` is the prompt it sent, byte for byte (a lone surrogate escape, which the server turns
  into U+FFFD, excepted): the editor shows a frame only when its prompt's last 10 characters
  (trimmed) are its document's;
- `text_0` .. `text_{batch_size-1}` and no other `text_` key, whatever the model and batch_size.

The editor's frame: prompt (its document's last characters, sliced in UTF-16 units, so a slice
may start inside an emoji), temperature 0.5, top_k 30, top_p 0, length 25 (50 for the hp model),
batch_size 7 (10 for the companies model), model_name, message_type "new_request", keys in that
order, serialized by JSON.stringify (non-ASCII raw, a lone surrogate as a \\u escape). It re-sends
the same prompt when the user pauses, sends a new prompt while the last one is still streaming,
and its model menu switches model_name on the same socket."""
import asyncio
import json
import re

import pytest
import websockets

from conftest import DATA, ROOT, Server

SOCKET = "/ws/async/writeup/text_generation/session/6f1d2c3b-9a8e-4b7c-8d6e-5f4a3b2c1d0e/"
# The editor's model menu and its constants (src/components/MainComponent/constants.js).
EDITOR_MODELS = ["gpt2-large", "gpt2-medium", "gpt2-medium-hp", "gpt2-medium-research",
                 "gpt2-medium-companies", "gpt2-medium-legal", "gpt2", "gpt2-medium-got", "gpt2-medium-lyrics"]
FINAL = ("completed_response", "error", "oom_response")


def js_stringify(obj):
    """JSON.stringify: non-ASCII characters raw, lone surrogates as lowercase \\u escapes."""
    text = json.dumps(obj, ensure_ascii=False, separators=(",", ":"))
    return re.sub("[\ud800-\udfff]", lambda m: "\\u%04x" % ord(m.group()), text)


def editor_frame(prompt, model_name, length=25, batch_size=7):
    return js_stringify({"prompt": prompt, "temperature": 0.5, "top_k": 30, "top_p": 0, "length": length,
                         "batch_size": batch_size, "model_name": model_name, "message_type": "new_request"})


def settings_for(model_name):
    """What the editor's page for a model sends (length, batch_size)."""
    if model_name == "gpt2-medium-hp":
        return {"length": 50, "batch_size": 7}
    if model_name == "gpt2-medium-companies":
        return {"length": 25, "batch_size": 10}
    return {"length": 25, "batch_size": 7}


def utf16_tail(text, units):
    """text.slice(-units) in JavaScript: the last `units` UTF-16 code units (may split a pair)."""
    encoded = text.encode("utf-16-le", "surrogatepass")[-2 * units:]
    return encoded.decode("utf-16-le", "surrogatepass")


def echoed(prompt):
    """The prompt as the server echoes it: lone surrogates become U+FFFD."""
    return re.sub("[\ud800-\udfff]", "\ufffd", prompt)


def shown_by_editor(frame_prompt, document):
    """The editor's own test before it shows a frame's suggestions."""
    return frame_prompt.strip()[-10:] == document.strip()[-10:]


def check_frame(raw, prompt, batch_size):
    """The editor's view of one server frame; returns the message."""
    outer = json.loads(raw)
    assert list(outer) == ["message"], outer
    m = outer["message"]
    assert m["message_type"] in ("updated_response",) + FINAL, m
    assert m["prompt"] == echoed(prompt), (m["prompt"][:40], prompt[:40])
    texts = sorted((k for k in m if "text_" in k), key=lambda k: int(k.split("_")[1]))
    assert texts == [f"text_{i}" for i in range(batch_size)], (texts, batch_size)
    assert all(isinstance(m[k], str) for k in texts)
    return m


async def until_final(ws, prompt, batch_size, limit=400):
    """Frames for `prompt` until its final one (bounded by count and time)."""
    frames = []
    for _ in range(limit):
        m = check_frame(await asyncio.wait_for(ws.recv(), 30), prompt, batch_size)
        frames.append(m)
        if m["message_type"] in FINAL:
            return frames
    pytest.fail(f"no final frame in {limit} frames")


@pytest.fixture(scope="module")
def shipped():
    """config/server.json as shipped, each model's weights swapped for the tiny fixture's (and
    what a test machine lacks: GPU, Redis, the port)."""
    cfg = json.loads((ROOT / "config" / "server.json").read_text())
    for m in cfg["models"]:
        m.update(path=str(DATA / "tiny-gpt2"), device="cpu", dtype="float32", max_batch=10)
    cfg["server"].update(host="127.0.0.1", port=0)
    cfg["cache"]["redis"] = None
    s = Server(config=cfg)
    yield s, cfg
    s.stop()


def test_the_shipped_config_answers_every_editor_model_name(shipped):
    server, cfg = shipped
    names = {n for m in cfg["models"] for n in [m["name"], *m.get("aliases", [])]}
    assert set(EDITOR_MODELS) <= names


def test_replay_an_editor_session_on_one_socket(shipped):
    server, _ = shipped
    # The editor's document: a first sentence, an emoji, then text; its 700-character window
    # (UTF-16 units) starts right after the emoji's high surrogate.
    body = ("It was a dark and stormy night, and the writers of the valley gathered to hear "
            "the old machine tell them what came next. ") * 8
    body = body[:699]
    document = "Chapter one. \U0001F600" + body
    window = utf16_tail(document, 700)
    assert window[0] == "\ude00" and window[1:] == body

    async def session():
        log = []
        async with websockets.connect(server.ws_url + SOCKET, max_size=None) as ws:
            # 1. The socket opens: the editor sends its document at once (default model gpt2-large).
            await ws.send(editor_frame(window, "gpt2-large"))
            first = await until_final(ws, window, 7)
            log.append(("open", window, first))

            # 2. The user pauses: the same prompt again (a cache hit: one completed frame).
            await ws.send(editor_frame(window, "gpt2-large"))
            again = await until_final(ws, window, 7)
            log.append(("pause", window, again))

            # 3. The user types on while suggestions stream: the new prompt supersedes the old;
            # frames of either prompt may arrive, each echoing its own prompt.
            typed = window + " The machine"
            await ws.send(editor_frame(window + " The", "gpt2-large"))
            await ws.send(editor_frame(typed, "gpt2-large"))
            seen = []
            for _ in range(400):
                outer = json.loads(await asyncio.wait_for(ws.recv(), 30))
                prompt = outer["message"]["prompt"]
                assert prompt in (echoed(window + " The"), echoed(typed)), prompt[-20:]
                m = check_frame(json.dumps(outer), window + " The" if prompt == echoed(window + " The") else typed, 7)
                seen.append(m)
                if m["prompt"] == echoed(typed) and m["message_type"] in FINAL:
                    break
            log.append(("typed", typed, seen))

            # 4. The model menu: every editor model on the same socket, with its page's settings.
            for name in EDITOR_MODELS:
                s = settings_for(name)
                prompt = f"{body[-200:]} {name} says"
                await ws.send(editor_frame(prompt, name, **s))
                frames = await until_final(ws, prompt, s["batch_size"])
                log.append((name, prompt, frames))
        return log

    log = asyncio.run(session())
    for label, prompt, frames in log:
        final = frames[-1]
        assert final["message_type"] == "completed_response", (label, final)
        # The editor would show it: the frame's prompt ends as the document does.
        assert shown_by_editor(final["prompt"], prompt), label
    by_label = {label: frames for label, _, frames in log}
    # The lone surrogate came back as U+FFFD, the rest of the window byte for byte.
    assert by_label["open"][-1]["prompt"] == "\ufffd" + body
    # The re-send is answered from the cache, with the same suggestions.
    assert len(by_label["pause"]) == 1
    first_final = by_label["open"][-1]
    assert [by_label["pause"][0][f"text_{i}"] for i in range(7)] == \
        [first_final[f"text_{i}"] for i in range(7)]
    # Each model answered under the name the editor sent (an alias stays the alias).
    for name in EDITOR_MODELS:
        assert by_label[name][-1]["model_name"] == name
        assert any(by_label[name][-1][f"text_{i}"] for i in range(settings_for(name)["batch_size"])), name


def test_error_frames_echo_the_prompt_and_the_batch_size(shipped):
    server, _ = shipped
    prompt = "\ude00Mid-emoji start, then the text \u00e9\u4e2d the user typed "

    async def go():
        out = []
        async with websockets.connect(server.ws_url + SOCKET) as ws:
            # A model the shipped config does not serve (an editor built for other models).
            await ws.send(editor_frame(prompt, "gpt2-xl-poetry", batch_size=7))
            out.append(await until_final(ws, prompt, 7))
            # A value out of range (the settings modal lets top_k go to 100 in some builds).
            frame = {"prompt": prompt, "temperature": 0.5, "top_k": 100, "top_p": 0, "length": 25,
                     "batch_size": 9, "model_name": "gpt2-medium", "message_type": "new_request"}
            await ws.send(js_stringify(frame))
            out.append(await until_final(ws, prompt, 9))
            # A message_type the server does not know: prompt and batch_size still echoed.
            frame["top_k"], frame["message_type"] = 30, "new_request_v2"
            await ws.send(js_stringify(frame))
            out.append(await until_final(ws, prompt, 9))
            # The socket still serves the next good request.
            await ws.send(editor_frame(prompt, "gpt2-medium-hp", length=5, batch_size=3))
            out.append(await until_final(ws, prompt, 3))
        return out

    not_found, bad_value, bad_type, good = asyncio.run(go())
    assert not_found[-1]["message_type"] == "error" and not_found[-1]["error"]["code"] == "model_not_found"
    assert bad_value[-1]["message_type"] == "error" and bad_value[-1]["error"]["field"] == "top_k"
    assert bad_type[-1]["message_type"] == "error" and bad_type[-1]["error"]["field"] == "message_type"
    assert good[-1]["message_type"] == "completed_response" and good[-1]["model_name"] == "gpt2-medium-hp"

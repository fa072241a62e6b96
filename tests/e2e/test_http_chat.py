"""POST /v1/chat/completions over the completions machinery (issue 13): streaming and not, the
template, the default stop, the same parameters, refusals of what a base model cannot do."""
import json

import requests

from conftest import Server, config, DATA


def chat(server, body, **kw):
    return requests.post(server.url + "/v1/chat/completions", json=body, timeout=30, **kw)


def sse(r):
    out = []
    for raw in r.iter_lines():
        line = raw.decode()
        if line.startswith("data: "):
            out.append(line[6:])
    return out


MESSAGES = [{"role": "system", "content": "You are terse."},
            {"role": "user", "content": [{"type": "text", "text": "Say"}, {"type": "text", "text": " hello"}]}]
PROMPT = "system: You are terse.\nuser: Say hello\nassistant:"


def test_chat_is_the_completion_of_the_templated_prompt(server):
    params = {"max_tokens": 8, "temperature": 0.9, "seed": 3, "n": 2, "top_p": 0.9, "presence_penalty": 0.5}
    c = chat(server, {"model": "tiny-gpt2", "messages": MESSAGES, **params})
    assert c.status_code == 200, c.text
    body = c.json()
    assert body["object"] == "chat.completion"
    assert body["id"].startswith("chatcmpl-")
    assert body["model"] == "tiny-gpt2"
    ref = requests.post(server.url + "/v1/completions",
                        json={"prompt": PROMPT, "stop": "\nuser:", **params}).json()
    assert [ch["message"] for ch in body["choices"]] == [{"role": "assistant", "content": ch["text"]}
                                                         for ch in ref["choices"]]
    assert [ch["finish_reason"] for ch in body["choices"]] == [ch["finish_reason"] for ch in ref["choices"]]
    assert body["usage"] == ref["usage"]
    # max_completion_tokens is max_tokens.
    c2 = chat(server, {"messages": MESSAGES, "max_completion_tokens": 8, **{k: v for k, v in params.items() if k != "max_tokens"}})
    assert c2.json()["choices"] == body["choices"]


def test_streamed_chat_chunks_carry_deltas_and_the_role_first(server):
    req = {"messages": MESSAGES, "max_tokens": 10, "temperature": 0.9, "seed": 5, "n": 2, "stream": True}
    r = chat(server, req, stream=True)
    assert r.status_code == 200
    assert r.headers["Content-Type"].startswith("text/event-stream")
    events = sse(r)
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    texts, finishes, first = {}, {}, {}
    for c in chunks:
        assert c["object"] == "chat.completion.chunk"
        assert c["id"].startswith("chatcmpl-")
        for ch in c["choices"]:
            i = ch["index"]
            if i not in first:
                first[i] = ch["delta"]
                assert ch["delta"]["role"] == "assistant"
            else:
                assert "role" not in ch["delta"]
            texts[i] = texts.get(i, "") + ch["delta"].get("content", "")
            if ch["finish_reason"]:
                finishes[i] = ch["finish_reason"]
    assert sorted(texts) == [0, 1] and sorted(finishes) == [0, 1]
    whole = chat(server, {**req, "stream": False}).json()
    assert [texts[i] for i in (0, 1)] == [ch["message"]["content"] for ch in whole["choices"]]


def test_the_default_stop_ends_at_the_next_user_turn():
    # A template whose user turn the tiny model produces quickly: every token starts a "turn".
    cfg = config()
    cfg["models"][0]["chat_template"] = "{role}{content}"
    s = Server(config=cfg)
    try:
        body = chat(s, {"messages": [{"role": "user", "content": "x"}], "max_tokens": 5, "temperature": 0}).json()
        ref = requests.post(s.url + "/v1/completions", json={"prompt": "userxassistant", "max_tokens": 5,
                                                             "temperature": 0, "stop": "user"}).json()
        assert body["choices"][0]["message"]["content"] == ref["choices"][0]["text"]
        # The client's stop replaces the default.
        own = chat(s, {"messages": [{"role": "user", "content": "x"}], "max_tokens": 5, "temperature": 0,
                       "stop": ["zzz"]}).json()
        plain = requests.post(s.url + "/v1/completions", json={"prompt": "userxassistant", "max_tokens": 5,
                                                               "temperature": 0, "stop": ["zzz"]}).json()
        assert own["choices"][0]["message"]["content"] == plain["choices"][0]["text"]
    finally:
        s.stop()


def test_what_a_base_model_cannot_do_is_400(server):
    base = {"messages": [{"role": "user", "content": "Hi"}]}
    cases = [
        ({"tools": [{"type": "function", "function": {"name": "f"}}]}, "tools"),
        ({"functions": [{"name": "f"}]}, "functions"),
        ({"tool_choice": "auto"}, "tool_choice"),
        ({"response_format": {"type": "json_object"}}, "response_format"),
        ({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]},
         "messages[0].content[0].type"),
        ({"messages": []}, "messages"),
        ({"messages": [{"role": "tool", "content": "x"}]}, "messages[0].role"),
        ({"bogus": 1}, "bogus"),
        ({"temperature": 5}, "temperature"),
    ]
    for extra, param in cases:
        r = chat(server, {**base, **extra})
        assert r.status_code == 400, (extra, r.text)
        assert r.json()["error"]["param"] == param, (extra, r.text)
    r = chat(server, {**base, "model": "nope"})
    assert r.status_code == 404 and r.json()["error"]["code"] == "model_not_found"
    # Accepted at their neutral values.
    r = chat(server, {**base, "max_tokens": 2, "tools": [], "response_format": {"type": "text"}, "tool_choice": "none",
                      "user": "u", "frequency_penalty": 0.1, "logprobs": False})
    assert r.status_code == 200, r.text


def test_chat_405_and_streamed_errors(server):
    r = requests.get(server.url + "/v1/chat/completions")
    assert r.status_code == 405 and "POST" in r.headers["Allow"]

"""POST /v1/completions `logprobs` (0-5) as the legacy completions API defines it, streaming and
not, with echo (issue 13). The tiny fixture model is a real GPT-2 (random weights): the numbers
are checked against each other, against greedy decoding and against transformers' logits."""
import math

import pytest

from openai_helpers import chars, complete, stream, texts_by_index, token_bytes

PROMPT = "The quick brown fox"

def greedy(server, **kw):
    body = {"prompt": PROMPT, "max_tokens": 12, "temperature": 0, "logprobs": 5, **kw}
    r = complete(server, body)
    assert r.status_code == 200, r.text
    return r.json()


def test_logprobs_object_matches_the_text(server):
    body = greedy(server)
    c = body["choices"][0]
    lp = c["logprobs"]
    assert set(lp) == {"tokens", "token_logprobs", "top_logprobs", "text_offset"}
    n = len(lp["tokens"])
    assert n == body["usage"]["completion_tokens"] == 12  # no stop string: every token
    assert len(lp["token_logprobs"]) == len(lp["top_logprobs"]) == len(lp["text_offset"]) == n
    assert b"".join(token_bytes(t) for t in lp["tokens"]).decode("utf-8", "replace") == c["text"]
    # text_offset: characters of prompt + completion before each token (echo false: from the
    # prompt's end, as OpenAI reports it).
    offset = len(PROMPT)
    for t, o in zip(lp["tokens"], lp["text_offset"]):
        assert o == offset
        offset += chars(token_bytes(t))
    for t, v, top in zip(lp["tokens"], lp["token_logprobs"], lp["top_logprobs"]):
        assert v <= 0 and len(top) == 5
        best = max(top, key=top.get)
        assert best == t  # greedy: the chosen token is the most likely one
        assert math.isclose(top[best], v, abs_tol=1e-5)


def test_first_token_alternatives_match_transformers(server, golden):
    fox = golden["fox"]
    r = complete(server, {"prompt": fox["ids"], "max_tokens": 1, "temperature": 0, "logprobs": 5})
    assert r.status_code == 200, r.text
    top = r.json()["choices"][0]["logprobs"]["top_logprobs"][0]
    ours = sorted(top.values(), reverse=True)
    ref = sorted(fox["last_top5_logits"], reverse=True)
    # log-softmax differs from the logits by one constant per position
    for a, b in zip(ours[1:], ref[1:]):
        assert math.isclose(a - ours[0], b - ref[0], abs_tol=1e-3)


def test_logprobs_zero_lists_tokens_without_alternatives(server):
    lp = greedy(server, logprobs=0)["choices"][0]["logprobs"]
    assert len(lp["tokens"]) == 12
    assert all(top == {} for top in lp["top_logprobs"])
    assert all(isinstance(v, float) for v in lp["token_logprobs"])


def test_streamed_logprobs_are_those_of_each_chunks_text(server):
    whole = greedy(server)["choices"][0]
    r, events, done = stream(server, {"prompt": PROMPT, "max_tokens": 12, "temperature": 0, "logprobs": 5})
    assert r.status_code == 200 and done
    tokens, values = [], []
    for e in events:
        c = e["choices"][0]
        if c["logprobs"] is None:
            continue
        chunk_bytes = b"".join(token_bytes(t) for t in c["logprobs"]["tokens"])
        assert chunk_bytes.decode("utf-8", "replace") == c["text"]
        tokens += c["logprobs"]["tokens"]
        values += c["logprobs"]["token_logprobs"]
    assert tokens == whole["logprobs"]["tokens"]
    assert math.isclose(sum(values), sum(whole["logprobs"]["token_logprobs"]), abs_tol=1e-4)
    assert texts_by_index(events)[0] == whole["text"]


def test_tokens_cut_by_a_stop_string_are_not_listed(server):
    full = greedy(server)["choices"][0]
    toks = full["logprobs"]["tokens"]
    # a stop string that begins at a token boundary, at its first occurrence
    k = next((k for k in range(2, len(toks))
              if not toks[k].startswith("bytes:") and toks[k].strip()
              and full["text"].find(toks[k]) == full["logprobs"]["text_offset"][k] - len(PROMPT)), None)
    if k is None:
        pytest.skip("no usable stop string in this greedy text")
    body = greedy(server, stop=toks[k])
    c = body["choices"][0]
    assert c["finish_reason"] == "stop"
    assert c["logprobs"]["tokens"] == toks[:k]
    assert b"".join(token_bytes(t) for t in toks[:k]).decode("utf-8", "replace") == c["text"]
    r, events, done = stream(server, {"prompt": PROMPT, "max_tokens": 12, "temperature": 0, "logprobs": 5,
                                      "stop": toks[k]})
    streamed = [t for e in events for ch in e["choices"] if ch["logprobs"] for t in ch["logprobs"]["tokens"]]
    assert streamed == toks[:k]


def test_echo_streams_the_prompt_first(server):
    whole = complete(server, {"prompt": PROMPT, "max_tokens": 8, "temperature": 0, "echo": True, "n": 2}).json()
    r, events, done = stream(server, {"prompt": PROMPT, "max_tokens": 8, "temperature": 0, "echo": True, "n": 2})
    assert r.status_code == 200 and done
    texts = texts_by_index(events)
    for c in whole["choices"]:
        assert c["text"].startswith(PROMPT)
        assert texts[c["index"]] == c["text"]
    for i in (0, 1):
        first = next(ch for e in events for ch in e["choices"] if ch["index"] == i)
        assert first["text"] == PROMPT


def test_echo_with_logprobs_lists_the_prompt_tokens_first(server):
    body = greedy(server, echo=True)
    c = body["choices"][0]
    lp = c["logprobs"]
    p = body["usage"]["prompt_tokens"]
    assert len(lp["tokens"]) == p + 12
    assert b"".join(token_bytes(t) for t in lp["tokens"][:p]).decode() == PROMPT
    assert lp["token_logprobs"][0] is None and lp["top_logprobs"][0] is None
    assert lp["text_offset"][0] == 0
    assert all(isinstance(v, float) for v in lp["token_logprobs"][1:])
    assert lp["text_offset"][p] == len(PROMPT)
    plain = greedy(server)["choices"][0]["logprobs"]
    assert lp["tokens"][p:] == plain["tokens"]
    # The same through the stream: the prompt's chunk carries the prompt's logprobs.
    r, events, done = stream(server, {"prompt": PROMPT, "max_tokens": 12, "temperature": 0, "logprobs": 5,
                                      "echo": True})
    first = events[0]["choices"][0]
    assert first["text"] == PROMPT
    assert len(first["logprobs"]["tokens"]) == p
    assert first["logprobs"]["token_logprobs"][0] is None
    assert all(isinstance(v, float) for v in first["logprobs"]["token_logprobs"][1:])


def test_echo_with_logprobs_has_a_null_first_prompt_token(server):
    lp = greedy(server, echo=True)["choices"][0]["logprobs"]
    assert lp["token_logprobs"][0] is None and lp["top_logprobs"][0] is None
    assert lp["text_offset"][0] == 0
    assert b"".join(token_bytes(t) for t in lp["tokens"]).decode("utf-8", "replace").startswith(PROMPT)


def test_logprobs_requests_are_not_served_from_the_cache(server):
    body = {"prompt": "Cache and logprobs", "max_tokens": 5, "temperature": 0}
    plain = complete(server, body).json()["choices"][0]
    again = complete(server, {**body, "logprobs": 2}).json()["choices"][0]
    assert plain["text"] == again["text"]
    assert again["logprobs"] is not None and len(again["logprobs"]["tokens"]) == 5

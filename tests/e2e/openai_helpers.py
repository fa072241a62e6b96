"""Helpers of the test_openai_*.py tests: requests to /v1/completions and its server-sent events."""
import json
import re

import requests


def complete(server, body, timeout=60):
    return requests.post(server.url + "/v1/completions", json=body, timeout=timeout)


def stream(server, body, timeout=60):
    """(response, [event dicts], saw_done): every data event of a streaming completion."""
    r = requests.post(server.url + "/v1/completions", json={**body, "stream": True}, timeout=timeout, stream=True)
    events, done = [], False
    if r.status_code != 200:
        return r, events, done
    for raw in r.iter_lines():
        line = raw.decode("utf-8")
        if not line.startswith("data: "):
            continue
        data = line[len("data: "):]
        if data == "[DONE]":
            done = True
            break
        events.append(json.loads(data))
    return r, events, done


def token_bytes(token):
    """A logprobs token's bytes: its UTF-8, or the bytes a "bytes:\\xNN..." token names."""
    if token.startswith("bytes:"):
        return bytes(int(h, 16) for h in re.findall(r"\\x([0-9a-f]{2})", token))
    return token.encode("utf-8")


def chars(data):
    """Characters of UTF-8 bytes as the server counts them: bytes that are not continuation bytes."""
    return sum(1 for b in data if b & 0xC0 != 0x80)


def texts_by_index(events):
    out = {}
    for e in events:
        for c in e["choices"]:
            out[c["index"]] = out.get(c["index"], "") + c["text"]
    return out

"""X-Request-Id on every HTTP answer and CORS for the origins in server.allowed_origins (issue 13,
HTTP details), with requests, raw sockets and a browser-like pre-flight."""
import re
import socket
import time

import pytest
import requests

from conftest import Server, config

APP = "https://app.example.com"
OTHER = "https://evil.example.net"
ID = re.compile(r"^[0-9a-f]{32}$")
# What the OpenAI JS SDK's pre-flight asks for.
SDK_HEADERS = ("authorization,content-type,x-stainless-arch,x-stainless-lang,x-stainless-os,"
               "x-stainless-package-version,x-stainless-retry-count,x-stainless-runtime,x-stainless-runtime-version,"
               "x-stainless-timeout")


@pytest.fixture(scope="module")
def cors_server():
    s = Server(config=config(server={"allowed_origins": [APP], "api_keys": ["sk-test"]}))
    yield s
    s.stop()


def raw(server, data, timeout=10):
    """Sends raw bytes, returns the whole answer (the server closes or the read times out)."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=timeout) as s:
        s.sendall(data)
        chunks = []
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                b = s.recv(65536)
            except socket.timeout:
                break
            if not b:
                break
            chunks.append(b)
            if b"\r\n\r\n" in b"".join(chunks) and b"Connection: close" not in b"".join(chunks):
                break
        return b"".join(chunks).decode("latin-1")


def test_every_answer_carries_a_request_id(server):
    answers = [
        requests.get(server.url + "/health"),
        requests.get(server.url + "/v1/models"),
        requests.post(server.url + "/v1/completions", json={"prompt": "Hi", "max_tokens": 2, "temperature": 0}),
        requests.post(server.url + "/v1/completions", json={"prompt": 5}),
        requests.get(server.url + "/nowhere"),
        requests.post(server.url + "/v1/completions", data="x" * (2 << 20)),  # 413
        requests.get(server.url + "/health", headers={"X-Big": "a" * 20000}),  # 431
        requests.post(server.url + "/v1/completions", json={"prompt": "Hi", "max_tokens": 2, "stream": True}),
        requests.get(server.url + "/ws/async/writeup/text_generation/session/abc/"),  # 400, not an upgrade
    ]
    ids = [r.headers.get("X-Request-Id", "") for r in answers]
    assert all(ID.match(i) for i in ids), ids
    assert len(set(ids)) == len(ids)


def test_a_malformed_request_gets_a_request_id(server):
    answer = raw(server, b"GET /health HTTP/1.1\r\nHost: x\r\nContent-Length: nope\r\n\r\n")
    assert answer.startswith("HTTP/1.1 400"), answer
    assert re.search(r"X-Request-Id: [0-9a-f]{32}\r\n", answer), answer


def test_the_clients_sane_request_id_is_kept(server):
    r = requests.get(server.url + "/health", headers={"X-Request-Id": "trace-42:abc/DEF"})
    assert r.headers["X-Request-Id"] == "trace-42:abc/DEF"
    r = requests.post(server.url + "/v1/completions", json={"prompt": "Hi", "max_tokens": 2, "stream": True},
                      headers={"X-Request-Id": "stream-7"})
    assert r.headers["X-Request-Id"] == "stream-7"
    for bad in ["has space", "a" * 129, "quote\"d", "ünicode".encode().decode("latin-1")]:
        r = requests.get(server.url + "/health", headers={"X-Request-Id": bad})
        assert ID.match(r.headers["X-Request-Id"]), bad


def test_the_websocket_handshake_carries_the_request_id(server):
    upgrade = (b"GET /ws/async/writeup/text_generation/session/rid/ HTTP/1.1\r\nHost: x\r\n"
               b"Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
               b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n")
    answer = raw(server, upgrade + b"X-Request-Id: ws-handshake-1\r\n\r\n", timeout=3)
    assert answer.startswith("HTTP/1.1 101"), answer
    assert "X-Request-Id: ws-handshake-1\r\n" in answer
    answer = raw(server, upgrade + b"X-Request-Id: bad id\r\n\r\n", timeout=3)
    assert re.search(r"X-Request-Id: [0-9a-f]{32}\r\n", answer), answer


def test_browser_preflight_from_an_allowed_origin(cors_server):
    r = requests.options(cors_server.url + "/v1/completions", headers={
        "Origin": APP, "Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": SDK_HEADERS})
    assert r.status_code == 204  # no API key needed
    assert r.headers["Access-Control-Allow-Origin"] == APP
    assert "POST" in r.headers["Access-Control-Allow-Methods"]
    allowed = {h.strip().lower() for h in r.headers["Access-Control-Allow-Headers"].split(",")}
    assert set(SDK_HEADERS.split(",")) <= allowed
    assert int(r.headers["Access-Control-Max-Age"]) > 0
    assert "Origin" in r.headers["Vary"]
    assert ID.match(r.headers["X-Request-Id"])
    assert r.text == ""
    # Chat too.
    r = requests.options(cors_server.url + "/v1/chat/completions",
                         headers={"Origin": APP, "Access-Control-Request-Method": "POST"})
    assert r.headers["Access-Control-Allow-Origin"] == APP
    assert "authorization" in r.headers["Access-Control-Allow-Headers"].lower()


def test_insane_requested_headers_get_the_fixed_list(cors_server):
    r = requests.options(cors_server.url + "/v1/completions", headers={
        "Origin": APP, "Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "good, b@d header"})
    assert r.status_code == 204
    assert "b@d" not in r.headers["Access-Control-Allow-Headers"]
    assert "Authorization" in r.headers["Access-Control-Allow-Headers"]


def test_a_disallowed_origin_gets_no_cors_headers(cors_server, server):
    for s in (cors_server, server):  # listed elsewhere, and no list at all
        r = requests.options(s.url + "/v1/completions", headers={
            "Origin": OTHER, "Access-Control-Request-Method": "POST"})
        assert r.status_code == 204
        assert r.text == ""
        assert not [h for h in r.headers if h.lower().startswith("access-control-")]
        r = requests.get(s.url + "/health", headers={"Origin": OTHER})
        assert r.status_code == 200
        assert "Access-Control-Allow-Origin" not in r.headers


def test_actual_answers_for_an_allowed_origin(cors_server):
    auth = {"Origin": APP, "Authorization": "Bearer sk-test"}
    answers = [
        requests.post(cors_server.url + "/v1/completions", json={"prompt": "Hi", "max_tokens": 2}, headers=auth),
        requests.post(cors_server.url + "/v1/completions", json={"prompt": "Hi", "max_tokens": 2, "stream": True},
                      headers=auth),
        requests.post(cors_server.url + "/v1/completions", json={"prompt": "Hi"}, headers={"Origin": APP}),  # 401
        requests.post(cors_server.url + "/v1/completions", json={"prompt": 5}, headers=auth),  # 400
    ]
    assert [r.status_code for r in answers] == [200, 200, 401, 400]
    for r in answers:
        assert r.headers["Access-Control-Allow-Origin"] == APP
        exposed = {h.strip().lower() for h in r.headers["Access-Control-Expose-Headers"].split(",")}
        assert {"x-request-id", "retry-after"} <= exposed
        assert "Origin" in r.headers["Vary"]


def test_options_without_preflight_answers_allow(server):
    r = requests.options(server.url + "/v1/completions")
    assert r.status_code == 204
    assert "POST" in r.headers["Allow"] and "OPTIONS" in r.headers["Allow"]


def test_star_allows_every_origin_for_http_and_websocket():
    s = Server(config=config(server={"allowed_origins": ["*"]}))
    try:
        r = requests.options(s.url + "/v1/completions", headers={"Origin": OTHER, "Access-Control-Request-Method": "POST"})
        assert r.headers["Access-Control-Allow-Origin"] == OTHER
        answer = raw(s, b"GET /ws/async/writeup/text_generation/session/x1/ HTTP/1.1\r\nHost: x\r\n"
                        b"Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
                        b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nOrigin: " + OTHER.encode() + b"\r\n\r\n", timeout=3)
        assert answer.startswith("HTTP/1.1 101"), answer
    finally:
        s.stop()

"""Issue 11, HTTP side: requests that used to abort, 500, leak files, stall or starve the server.
Each test uses raw sockets or requests against the real binary and checks that the server is
alive and serves another client afterwards."""
import concurrent.futures
import json
import os
import pathlib
import random
import socket
import string
import subprocess
import tempfile
import time

import requests

from conftest import DATA, SERVER_BIN, Server, config


def exchange(port, raw, timeout=10, limit=1 << 20):
    """Sends `raw` on a new connection and reads until the server closes it (bounded)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(raw)
        return read_until_closed(sock, timeout, limit)


def read_until_closed(sock, timeout=10, limit=1 << 20):
    data = b""
    deadline = time.time() + timeout
    while time.time() < deadline and len(data) < limit:
        sock.settimeout(max(0.05, deadline - time.time()))
        try:
            chunk = sock.recv(65536)
        except socket.timeout:
            break
        if not chunk:
            break
        data += chunk
    return data


def status_of(reply):
    return int(reply.split(b" ", 2)[1])


def body_of(reply):
    return reply.split(b"\r\n\r\n", 1)[1]


def assert_alive(s):
    assert s.proc.poll() is None, "the server process ended"
    assert requests.get(s.url + "/health", timeout=10).status_code == 200


def closed_within(sock, seconds, trickle=b"", every=0.25):
    """Trickles `trickle` one byte at a time; True when the server closes the connection
    within `seconds` (bounded by count and time)."""
    deadline = time.time() + seconds
    i = 0
    while time.time() < deadline:
        try:
            if trickle:
                sock.sendall(trickle[i % len(trickle):i % len(trickle) + 1])
                i += 1
            sock.settimeout(every)
            if sock.recv(4096) == b"":
                return True
        except socket.timeout:
            continue
        except (ConnectionResetError, BrokenPipeError):
            return True
    return False


# Defect 1: a form key that is not UTF-8 made building the 400 throw out of io_context::run().
def test_form_key_with_invalid_utf8_is_a_400_and_the_server_lives(server):
    for body in (b"%FF=1", b"prompt=Hi&%C3%28=2", b"%FF"):
        r = requests.post(server.url + "/v1/generate", data=body,
                          headers={"Content-Type": "application/x-www-form-urlencoded"}, timeout=10)
        assert r.status_code == 400, (body, r.text)
        err = r.json()["error"]
        assert "not valid UTF-8" in err["message"] and err["code"] == "invalid_value"
    assert_alive(server)


# Defect 3 (HTTP side): invalid UTF-8 in the query string with API keys set; /v1/models was 500.
def test_invalid_utf8_query_string_with_api_keys_is_a_400():
    s = Server(config=config(server={"api_keys": ["k1"]}))
    try:
        for target in (b"/v1/completions?%FF=1", b"/v1/models?%FF=1", b"/v1/models?api_key=%FF",
                       b"/ws/async/writeup/text_generation/session/abc/?%FF=1"):
            method = b"POST" if target.startswith(b"/v1/completions") else b"GET"
            reply = exchange(s.port, method + b" " + target + b" HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n"
                             b"Connection: close\r\n\r\n{}")
            assert 400 <= status_of(reply) < 500, reply
            json.loads(body_of(reply))  # valid JSON, invalid bytes replaced
        # The WebSocket upgrade reads the key from the query string too.
        reply = exchange(s.port, b"GET /ws/async/writeup/text_generation/session/abc/?api_key=%FF&%FE=1 HTTP/1.1\r\n"
                         b"Host: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
                         b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n", timeout=2)
        assert status_of(reply) == 400, reply
        assert json.loads(body_of(reply))["error"]["code"] == "invalid_query"
        r = requests.get(s.url + "/v1/models", headers={"Authorization": "Bearer k1"}, timeout=10)
        assert r.status_code == 200 and r.json()["data"][0]["id"] == "tiny-gpt2"
        assert requests.get(s.url + "/v1/models", timeout=10).status_code == 401
        assert_alive(s)
    finally:
        assert s.stop() == 0


# Defect 5: a byte that is not UTF-8 in an unknown path was a 500 (the 404 could not be encoded).
def test_non_utf8_byte_in_an_unknown_path_is_a_404(server):
    for target in (b"/\xff", b"/v1/\xc3\x28", b"/\xed\xa0\x80?\xff=\xfe"):
        reply = exchange(server.port, b"GET " + target + b" HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        assert status_of(reply) == 404, reply
        assert json.loads(body_of(reply))["error"]["code"] == "not_found"
    assert_alive(server)


# Decoding ids that end inside a character used to fail the strict dump (500).
def test_detokenize_of_a_partial_character_is_answered(server):
    ids = requests.post(server.url + "/v1/tokenize", json={"prompt": "\u2603"}, timeout=10).json()["tokens"]
    assert len(ids) > 1
    r = requests.post(server.url + "/v1/detokenize", json={"tokens": ids[:1]}, timeout=10)
    assert r.status_code == 200 and "\ufffd" in r.json()["text"]
    assert_alive(server)


# Defect 6: static_dir that does not exist skipped containment (arbitrary file read).
def test_missing_static_dir_fails_the_start_naming_it():
    missing = "/tmp/writeup-no-such-static-dir-%d" % os.getpid()
    proc = subprocess.run([SERVER_BIN, "--host", "127.0.0.1", "--port", "0", "--model",
                           f"tiny-gpt2={DATA / 'tiny-gpt2'}", "--static-dir", missing],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2, proc
    assert "server.static_dir" in proc.stderr and missing in proc.stderr and "does not exist" in proc.stderr
    assert "listening on" not in proc.stdout


def test_static_files_never_leave_their_directory():
    with tempfile.TemporaryDirectory() as d:
        root = pathlib.Path(d) / "site"
        root.mkdir()
        (root / "index.html").write_text("<h1>writeup</h1>")
        (pathlib.Path(d) / "secret.txt").write_text("TOP-SECRET-CONTENT")
        (root / "out.txt").symlink_to("../secret.txt")
        s = Server(config=config(server={"static_dir": str(root)}))
        try:
            for target in (b"//etc/hostname", b"/../../../../etc/os-release", b"/../../..", b"/../secret.txt",
                           b"/out.txt", b"/./../secret.txt", b"//../secret.txt"):
                reply = exchange(s.port, b"GET " + target + b" HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                assert status_of(reply) == 404, (target, reply)
                assert json.loads(body_of(reply))["error"]["code"] == "not_found"
                assert b"TOP-SECRET-CONTENT" not in reply
            r = requests.get(s.url + "/", timeout=10)
            assert r.status_code == 200 and r.text == "<h1>writeup</h1>"
            assert_alive(s)
        finally:
            s.stop()


# Defect 7 (HTTP side): tokenizing ran on the I/O thread; a long word stalled /health.
def test_tokenizing_a_long_word_does_not_block_health():
    s = Server(config=config(server={"io_threads": 1}))
    try:
        rng = random.Random(11)
        # One pre-token of random letters: the old quadratic merge took ~10 s over it.
        word = "".join(rng.choice(string.ascii_lowercase) for _ in range(80_000))
        with concurrent.futures.ThreadPoolExecutor(2) as pool:
            slow = pool.submit(requests.post, s.url + "/v1/tokenize", json={"prompt": word}, timeout=120)
            time.sleep(0.3)  # the request is in
            health = requests.get(s.url + "/health", timeout=3)  # the old server answered after the encode
            assert health.status_code == 200
            r = slow.result()
            assert r.status_code == 200 and r.json()["count"] > 0
        assert_alive(s)
    finally:
        s.stop(timeout=60)


# Defect 8: slowloris. The head has a deadline from its first byte; a body a minimum rate.
def test_a_trickled_request_head_is_shed():
    s = Server(config=config(limits={"header_timeout_s": 1}))
    try:
        with socket.create_connection(("127.0.0.1", s.port)) as sock:
            sock.sendall(b"GET /health HTTP/1.1\r\n")
            assert closed_within(sock, 8, trickle=b"X-Slow: abcdefghijklmnopqrstuvwxyz\r\n")
        assert_alive(s)
    finally:
        s.stop()


def test_a_trickled_body_is_shed():
    s = Server(config=config(limits={"header_timeout_s": 1, "min_body_bytes_per_s": 1000}))
    try:
        with socket.create_connection(("127.0.0.1", s.port)) as sock:
            sock.sendall(b"POST /v1/tokenize HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                         b"Content-Length: 2000\r\n\r\n")
            assert closed_within(sock, 10, trickle=b" ")  # deadline 1 s + 2000 B / 1000 B/s
        assert_alive(s)
    finally:
        s.stop()


def test_health_answers_while_every_slot_trickles():
    n = 1024
    s = Server(config=config(limits={"max_connections": n}))
    socks = []
    try:
        for _ in range(n):
            c = socket.create_connection(("127.0.0.1", s.port), timeout=10)
            c.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n")
            socks.append(c)
        for round_ in range(2):  # trickle: still incomplete heads
            for c in socks:
                try:
                    c.sendall(b"X")
                except OSError:
                    pass
            time.sleep(0.2)
        for _ in range(3):
            r = requests.get(s.url + "/health", timeout=10, headers={"Connection": "close"})
            assert r.status_code == 200, r.text
        shed = 0
        for line in requests.get(s.url + "/metrics", timeout=10).text.splitlines():
            if line.startswith("writeup_connections_shed_total"):
                shed = float(line.rsplit(" ", 1)[1])
        assert shed >= 1
        assert_alive(s)
    finally:
        for c in socks:
            c.close()
        s.stop()


# Defect 12 (HTTP side): HEAD without a body, SSE to HTTP/1.0 close-delimited, 100-continue.
def test_head_answers_carry_no_body(server):
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        # Two requests on one connection: a body after the HEAD answer would be read as the
        # start of the second answer.
        sock.sendall(b"HEAD /health HTTP/1.1\r\nHost: x\r\n\r\nGET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        data = read_until_closed(sock)
    head, rest = data.split(b"\r\n\r\n", 1)
    assert head.startswith(b"HTTP/1.1 200")
    assert b"content-length: 15" in head.lower()
    assert rest.startswith(b"HTTP/1.1 200"), data
    assert body_of(rest) == b'{"status":"ok"}'
    reply = exchange(server.port, b"HEAD /nope HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert status_of(reply) == 404 and body_of(reply) == b""
    assert_alive(server)


def test_sse_to_an_http10_client_is_close_delimited(server):
    body = json.dumps({"prompt": "Hello", "max_tokens": 5, "stream": True, "seed": 3}).encode()
    reply = exchange(server.port, b"POST /v1/completions HTTP/1.0\r\nContent-Type: application/json\r\n"
                     b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body, timeout=60)
    head, events = reply.split(b"\r\n\r\n", 1)
    assert head.startswith(b"HTTP/1.0 200"), head
    assert b"chunked" not in head.lower() and b"content-length" not in head.lower()
    assert events.startswith(b"data: {"), events[:80]
    assert events.endswith(b"data: [DONE]\n\n"), events[-80:]
    chunks = [json.loads(e[len(b"data: "):]) for e in events.split(b"\n\n") if e and e != b"data: [DONE]"]
    assert chunks[-1]["choices"][0]["finish_reason"] in ("stop", "length")
    assert_alive(server)


def test_expect_100_continue_is_answered_before_the_body(server):
    body = b"prompt=Hello&length=3&batch_size=1"
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(b"POST /v1/generate HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\n"
                     b"Expect: 100-continue\r\nConnection: close\r\nContent-Length: " + str(len(body)).encode() + b"\r\n\r\n")
        sock.settimeout(5)
        interim = sock.recv(4096)  # the old server sent nothing until the body came
        assert interim.startswith(b"HTTP/1.1 100 Continue\r\n\r\n"), interim
        sock.sendall(body)
        reply = interim[len(b"HTTP/1.1 100 Continue\r\n\r\n"):] + read_until_closed(sock, 60)
    assert status_of(reply) == 200, reply
    assert json.loads(body_of(reply))["message"]["message_type"] == "completed_response"
    assert_alive(server)


def test_401_asks_for_a_bearer_key_and_the_scheme_is_case_insensitive():
    s = Server(config=config(server={"api_keys": ["k1"]}))
    try:
        r = requests.get(s.url + "/v1/models")
        assert r.status_code == 401 and r.headers["WWW-Authenticate"] == "Bearer"
        assert requests.get(s.url + "/v1/models", headers={"Authorization": "Bearer wrong"}).status_code == 401
        for scheme in ("Bearer", "bearer", "BEARER"):
            r = requests.get(s.url + "/v1/models", headers={"Authorization": scheme + " k1"})
            assert r.status_code == 200, scheme
    finally:
        assert s.stop() == 0

"""WebSocket hardening (issue 11): hostile or careless WebSocket clients get a clear answer or
are closed, the process lives, memory stays bounded, and other clients are served."""
import asyncio
import base64
import concurrent.futures
import json
import os
import random
import socket
import struct
import time

import pytest
import requests
import websockets

from conftest import DATA, Server, config, metric

WS_PATH = "/ws/async/writeup/text_generation/session/hardening-1/"
ROUTE = "/ws/async/writeup"


def new_request(**kw):
    msg = {"message_type": "new_request", "prompt": "Hello there", "length": 10, "batch_size": 2, "seed": 1}
    msg.update(kw)
    return json.dumps(msg)


# --- a minimal raw WebSocket client, for what a library client will not do ------------------

def upgrade_bytes(path=WS_PATH, headers=None):
    lines = [f"GET {path} HTTP/1.1".encode(), b"Host: 127.0.0.1", b"Upgrade: websocket", b"Connection: Upgrade",
             b"Sec-WebSocket-Key: " + base64.b64encode(os.urandom(16)), b"Sec-WebSocket-Version: 13"]
    for k, v in (headers or {}).items():
        lines.append(k.encode() + b": " + (v if isinstance(v, bytes) else v.encode()))
    return b"\r\n".join(lines) + b"\r\n\r\n"


def client_frame(payload, opcode=0x1):
    """One masked, final frame (clients must mask)."""
    if isinstance(payload, str):
        payload = payload.encode()
    mask = os.urandom(4)
    n = len(payload)
    if n < 126:
        head = struct.pack("!BB", 0x80 | opcode, 0x80 | n)
    elif n < 65536:
        head = struct.pack("!BBH", 0x80 | opcode, 0x80 | 126, n)
    else:
        head = struct.pack("!BBQ", 0x80 | opcode, 0x80 | 127, n)
    return head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


def raw_connect(rcvbuf=None, timeout=10):
    s = socket.socket()
    if rcvbuf:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    s.settimeout(timeout)
    return s


class Reader:
    """Reads an HTTP head, then server frames (unmasked), from a raw socket."""

    def __init__(self, sock):
        self.sock, self.buf = sock, b""
        self.partial_op, self.partial = 0, b""

    def _fill(self):
        chunk = self.sock.recv(65536)
        if not chunk:
            raise EOFError
        self.buf += chunk

    def _take(self, n):
        while len(self.buf) < n:
            self._fill()
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def http_head(self):
        while b"\r\n\r\n" not in self.buf:
            self._fill()
        head, self.buf = self.buf.split(b"\r\n\r\n", 1)
        return head.decode("latin-1")

    def http_response(self):
        head = self.http_head()
        status = int(head.split()[1])
        length = 0
        for line in head.split("\r\n")[1:]:
            k, _, v = line.partition(":")
            if k.strip().lower() == "content-length":
                length = int(v)
        return status, head, self._take(length)

    def _frame(self):
        b0, b1 = self._take(2)
        n = b1 & 0x7F
        if n == 126:
            n = struct.unpack("!H", self._take(2))[0]
        elif n == 127:
            n = struct.unpack("!Q", self._take(8))[0]
        return bool(b0 & 0x80), b0 & 0x0F, self._take(n)

    def frame(self):
        """(opcode, payload) of the next message, its fragments joined; a control frame (which
        may come between the fragments of a message) as it comes."""
        while True:
            fin, op, data = self._frame()
            if op >= 0x8:
                return op, data
            if op != 0x0:
                self.partial_op, self.partial = op, b""
            self.partial += data
            if fin:
                return self.partial_op, self.partial


def read_until_final(reader, deadline):
    """Text frames as messages until a final one; pings are answered by nobody here."""
    while time.time() < deadline:
        op, data = reader.frame()
        if op == 0x1:
            msg = json.loads(data)["message"]
            if msg["message_type"] in ("completed_response", "error", "oom_response"):
                return msg
        elif op == 0x8:
            raise AssertionError(f"closed by the server: {data!r}")
    raise AssertionError("no final frame in time")


async def served(server, **kw):
    """A well-behaved client gets its suggestions."""
    async with websockets.connect(server.ws_url + WS_PATH, **kw) as ws:
        await ws.send(new_request(length=5, batch_size=1))
        for _ in range(100):
            msg = json.loads(await asyncio.wait_for(ws.recv(), 30))["message"]
            if msg["message_type"] != "updated_response":
                return msg
    raise AssertionError("no final frame")


def assert_alive_and_serving(server, **kw):
    assert requests.get(server.url + "/health", timeout=10).status_code == 200
    assert asyncio.run(served(server, **kw))["message_type"] == "completed_response"


# --- defect 3: invalid UTF-8 in the upgrade's query string, API keys set ---------------------

@pytest.mark.parametrize("query", ["?%FF=1", "?api_key=%FF%FE", "?a=1&%C3=2"])
def test_invalid_utf8_query_on_the_websocket_route_is_400(query):
    s = Server(config=config(server={"api_keys": ["k1"]}))
    try:
        with raw_connect() as sock:
            sock.connect(("127.0.0.1", s.port))
            sock.sendall(upgrade_bytes(WS_PATH + query))
            status, _, body = Reader(sock).http_response()
        assert status == 400
        err = json.loads(body)["error"]
        assert err["type"] == "invalid_request_error" and "UTF-8" in err["message"]
        assert_alive_and_serving(s, extra_headers={"Authorization": "Bearer k1"})
    finally:
        assert s.stop() == 0


# --- defect 4: a non-UTF-8 Origin with allowed_origins set --------------------------------------

def test_non_utf8_origin_is_a_clean_403():
    s = Server(config=config(server={"allowed_origins": ["http://editor.example"]}))
    try:
        for origin in (b"http://\xff\xfe.example", b"\xc3"):
            with raw_connect() as sock:
                sock.connect(("127.0.0.1", s.port))
                sock.sendall(upgrade_bytes(headers={"Origin": origin}))
                status, _, body = Reader(sock).http_response()
            assert status == 403
            err = json.loads(body)["error"]  # valid JSON: the byte became U+FFFD
            assert err["code"] == "origin_not_allowed" and "\ufffd" in err["message"]
        assert requests.get(s.url + "/metrics", timeout=10).status_code == 200
        assert_alive_and_serving(s, origin="http://editor.example")
    finally:
        assert s.stop() == 0


# --- defect 12: a frame in the same packet as the upgrade request ------------------------------

def test_frame_sent_with_the_upgrade_request_is_answered():
    s = Server(config=config())
    try:
        with raw_connect() as sock:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock.connect(("127.0.0.1", s.port))
            # One send: the request and the first message arrive together.
            sock.sendall(upgrade_bytes() + client_frame(new_request(prompt="Same packet", length=5, batch_size=1)))
            reader = Reader(sock)
            head = reader.http_head()
            assert head.startswith("HTTP/1.1 101")
            final = read_until_final(reader, time.time() + 30)
        assert final["message_type"] == "completed_response"
        assert final["prompt"] == "Same packet" and final["text_0"]
        assert_alive_and_serving(s)
    finally:
        assert s.stop() == 0


def test_big_frame_sent_with_the_upgrade_request_is_answered():
    # Larger than Beast's internal 1.5 KB read buffer: the whole buffered tail must carry over.
    s = Server(config=config())
    try:
        prompt = "word " * 2000
        with raw_connect() as sock:
            sock.connect(("127.0.0.1", s.port))
            sock.sendall(upgrade_bytes() + client_frame(new_request(prompt=prompt, length=5, batch_size=1)))
            reader = Reader(sock)
            assert reader.http_head().startswith("HTTP/1.1 101")
            final = read_until_final(reader, time.time() + 30)
        assert final["message_type"] == "completed_response" and final["prompt"] == prompt
    finally:
        assert s.stop() == 0


# --- defect 12: the idle timeout applies to WebSockets -----------------------------------------

def test_idle_websocket_is_closed_and_ping_pong_keeps_one_alive():
    s = Server(config=config(limits={"idle_timeout_s": 1}))
    try:
        async def live_client():
            # websockets answers the server's pings: this connection is not idle.
            async with websockets.connect(s.ws_url + WS_PATH, ping_interval=None) as ws:
                await asyncio.sleep(3)
                await ws.send(new_request(length=5, batch_size=1))
                for _ in range(100):
                    msg = json.loads(await asyncio.wait_for(ws.recv(), 30))["message"]
                    if msg["message_type"] != "updated_response":
                        return msg

        with raw_connect(timeout=15) as sock:
            sock.connect(("127.0.0.1", s.port))
            sock.sendall(upgrade_bytes())
            reader = Reader(sock)
            assert reader.http_head().startswith("HTTP/1.1 101")
            started = time.time()
            with concurrent.futures.ThreadPoolExecutor(1) as pool:
                live = pool.submit(asyncio.run, live_client())
                # This client sends nothing and answers no ping: the server must drop it.
                ops = []
                with pytest.raises((EOFError, ConnectionResetError)):
                    while time.time() - started < 12:
                        ops.append(reader.frame()[0])
                assert time.time() - started < 12, "an idle WebSocket was never closed"
                assert 0x9 in ops, "the server pings before it gives up"
                assert live.result(timeout=40)["message_type"] == "completed_response"
        assert_alive_and_serving(s)
    finally:
        assert s.stop() == 0


# --- defect 7: the prompt is tokenized off the I/O threads --------------------------------------

def test_tokenizing_a_huge_prompt_does_not_block_the_io_thread():
    # One I/O thread: if it tokenized the prompt, /health would wait for it.
    s = Server(config=config(server={"io_threads": 1}))
    try:
        with raw_connect() as sock:
            sock.connect(("127.0.0.1", s.port))
            sock.sendall(upgrade_bytes())
            reader = Reader(sock)
            assert reader.http_head().startswith("HTTP/1.1 101")
            # One 60,000-letter "word": seconds of BPE merging with a quadratic merge loop.
            rng = random.Random(7)
            word = "".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(60_000))
            sock.sendall(client_frame(new_request(prompt=word, length=5, batch_size=1)))
            time.sleep(0.3)
            for _ in range(3):
                assert requests.get(s.url + "/health", timeout=3).status_code == 200
    finally:
        s.stop()


# --- defect 9: clients that never read are bounded in bytes and closed --------------------------

def vm_kb(pid, field):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise KeyError(field)


def flood(port, messages, prompt):
    """A client with a tiny receive buffer that sends many requests and reads nothing."""
    sock = raw_connect(rcvbuf=4096, timeout=10)
    sock.connect(("127.0.0.1", port))
    sock.sendall(upgrade_bytes())
    reader = Reader(sock)
    assert reader.http_head().startswith("HTTP/1.1 101")
    sock.settimeout(2)
    # An invalid temperature: each request is answered at once by an error frame echoing the prompt.
    frame = client_frame(new_request(prompt=prompt, temperature=5))
    sent = 0
    try:
        for _ in range(messages):
            sock.sendall(frame)
            sent += 1
    except (socket.timeout, BrokenPipeError, ConnectionResetError):
        pass  # the server stopped reading us
    return sock, reader, sent


def drain(sock, reader, seconds):
    """Reads what the server still sends; returns the close code it sent, if any."""
    sock.settimeout(seconds)
    deadline = time.time() + seconds
    try:
        while time.time() < deadline:
            op, data = reader.frame()
            if op == 0x8:
                return struct.unpack("!H", data[:2])[0] if len(data) >= 2 else None
    except (EOFError, ConnectionResetError, socket.timeout):
        return None
    raise AssertionError("a slow client was never closed")


def test_clients_that_never_read_are_closed_and_memory_stays_bounded():
    s = Server(config=config(limits={"max_ws_queued_bytes": 4 << 20, "max_ws_message_bytes": 1 << 20}))
    try:
        assert_alive_and_serving(s)
        pid = s.proc.pid
        base_hwm = vm_kb(pid, "VmHWM")
        prompt = "x" * 900_000
        clients = 4
        with concurrent.futures.ThreadPoolExecutor(clients + 1) as pool:
            floods = [pool.submit(flood, s.port, 80, prompt) for _ in range(clients)]
            time.sleep(0.5)
            normal = pool.submit(lambda: asyncio.run(served(s)))
            results = [f.result(timeout=120) for f in floods]
            assert normal.result(timeout=60)["message_type"] == "completed_response"
        grown_mib = (vm_kb(pid, "VmHWM") - base_hwm) / 1024
        print(f"peak RSS growth with {clients} clients that never read: {grown_mib:.1f} MiB")
        # Unbounded, 4 clients x 80 queued 900 KB frames is ~290 MiB; capped, ~4 MiB each.
        # Under AddressSanitizer freed memory sits in its quarantine (256 MiB), so RSS says
        # nothing there: the bound is checked in the normal build, the closes in both.
        if not os.environ.get("WRITEUP_SANITIZED"):
            assert grown_mib < 100, f"peak RSS grew by {grown_mib:.0f} MiB"
        codes = [drain(sock, reader, 30) for sock, reader, _ in results]
        for sock, _, _ in results:
            sock.close()
        assert set(codes) <= {1008, None} and 1008 in codes, codes
        assert_alive_and_serving(s)
    finally:
        assert s.stop() == 0


# --- defect 11: queue_full over WebSocket is counted as 429, not 200 ---------------------------

def test_websocket_outcomes_are_counted_with_their_real_status():
    s = Server(config={**config(limits={"max_queue": 1}),
                       "models": [{"name": "tiny-gpt2", "path": str(DATA / "tiny-gpt2"), "max_batch": 1}]})
    try:
        before = {st: metric(s, "writeup_requests_total", route=ROUTE, status=st) for st in ("200", "429")}

        async def one(i):
            async with websockets.connect(s.ws_url + WS_PATH) as ws:
                await ws.send(new_request(prompt=f"Request number {i}", length=60, batch_size=1, seed=i))
                for _ in range(200):
                    msg = json.loads(await asyncio.wait_for(ws.recv(), 60))["message"]
                    if msg["message_type"] != "updated_response":
                        return msg

        async def all_of(n):
            return await asyncio.gather(*(one(i) for i in range(n)))

        finals = asyncio.run(all_of(16))
        completed = sum(1 for m in finals if m["message_type"] == "completed_response")
        busy = sum(1 for m in finals if m["message_type"] == "error" and m["error"]["code"] == "queue_full")
        assert completed + busy == len(finals), [m.get("error") for m in finals]
        assert busy > 0, "the test needs some requests refused"
        after = {st: metric(s, "writeup_requests_total", route=ROUTE, status=st) for st in ("200", "429")}
        assert after["200"] - before["200"] == completed
        assert after["429"] - before["429"] == busy
        assert_alive_and_serving(s)
    finally:
        assert s.stop() == 0


def test_errors_and_cancels_are_each_counted_once():
    s = Server(config=config())
    try:
        before = {st: metric(s, "writeup_requests_total", route=ROUTE, status=st) for st in ("200", "400")}

        async def go():
            async with websockets.connect(s.ws_url + WS_PATH) as ws:
                await ws.send(new_request(temperature=9))
                bad = json.loads(await ws.recv())["message"]
                await ws.send(new_request(prompt="cancel me", length=40, batch_size=4))
                await ws.send(json.dumps({"message_type": "cancel_request"}))
                while True:
                    msg = json.loads(await asyncio.wait_for(ws.recv(), 30))["message"]
                    if msg["message_type"] != "updated_response":
                        break
                return bad, msg
        bad, cancelled = asyncio.run(go())
        # Usually cancelled while it runs; either way it ends with one completed_response.
        assert bad["message_type"] == "error" and cancelled["message_type"] == "completed_response"
        after = {st: metric(s, "writeup_requests_total", route=ROUTE, status=st) for st in ("200", "400")}
        assert after["400"] - before["400"] == 1
        assert after["200"] - before["200"] == 1
    finally:
        assert s.stop() == 0


def test_max_ws_queued_bytes_is_range_checked_at_start(tmp_path):
    import subprocess
    from conftest import SERVER_BIN
    cfg = tmp_path / "bad.json"
    cfg.write_text(json.dumps(config(limits={"max_ws_queued_bytes": 0})))
    r = subprocess.run([SERVER_BIN, "--config", str(cfg), "--port", "0"], capture_output=True, text=True, timeout=30)
    assert r.returncode != 0
    assert "limits.max_ws_queued_bytes" in r.stdout + r.stderr


@pytest.mark.parametrize("headers,status,code", [
    ({"Sec-WebSocket-Key": None}, 400, "bad_websocket_handshake"),
    ({"Sec-WebSocket-Version": "12"}, 426, "upgrade_required"),
])
def test_malformed_handshakes_get_json_errors_and_are_counted(headers, status, code):
    s = Server(config=config())
    try:
        raw = upgrade_bytes()
        for k, v in headers.items():
            lines = [l for l in raw.split(b"\r\n") if not l.startswith(k.encode() + b":")]
            if v is not None:
                lines.insert(1, f"{k}: {v}".encode())
            raw = b"\r\n".join(lines)
        before = metric(s, "writeup_requests_total", route=ROUTE, status=str(status))
        with raw_connect() as sock:
            sock.connect(("127.0.0.1", s.port))
            sock.sendall(raw)
            got, _, body = Reader(sock).http_response()
        assert got == status
        err = json.loads(body)["error"]
        assert err["code"] == code and "WebSocket" in err["message"]
        assert metric(s, "writeup_requests_total", route=ROUTE, status=str(status)) - before == 1
        assert_alive_and_serving(s)
    finally:
        assert s.stop() == 0

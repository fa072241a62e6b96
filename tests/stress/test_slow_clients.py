"""Slow clients are shed and others are served.

Slowloris: as many connections as the server admits trickle their headers (or their body) at
1 byte/s; the header deadline (limits.header_timeout_s) and the minimum body rate
(limits.min_body_bytes_per_s) close them, /health answers again within that deadline, and while
half as many trickle, /health and a normal client are served at once.

Slow readers: WebSocket clients that never read, asking for frames that repeat a large prompt;
the outbound queue is capped in bytes (limits.max_ws_queued_bytes, default 4 MiB) and the session
closed with 1008 or 1013, so the server's memory stays bounded and others are served."""
import asyncio
import json
import select
import socket
import threading
import time

import requests
import websockets

from stress_support import (WS_PATH, MiB, RawWebSocket, StressServer, config, new_request, record, scale)

HEADER_TIMEOUT_S = 2
MIN_BODY_RATE = 100         # bytes/s; the body tricklers send 1 byte/s
SLOTS = scale(128, 1024)    # limits.max_connections
BODY_TRICKLERS = 16
HEADER_SLACK_S = 3          # a header trickler must be gone header_timeout_s + this after connecting
BODY_SHED_S = 15            # a body trickler must be gone this long after connecting


def normal_client_completes(s, timeout=60):
    async def go():
        async with websockets.connect(s.ws_url + WS_PATH.format("normal"), open_timeout=timeout) as ws:
            await ws.send(new_request(length=8, batch_size=1))
            while True:
                m = json.loads(await asyncio.wait_for(ws.recv(), timeout))["message"]
                if m["message_type"] != "updated_response":
                    return m["message_type"]
    return asyncio.run(go()) == "completed_response"


class Tricklers:
    """`n` connections sending their request 1 byte per second; records when the server ends each."""

    def __init__(self, port, n, body=0):
        self.socks, self.opened, self.ended, self.kind = [], [], {}, []
        for i in range(n):
            sock = socket.create_connection(("127.0.0.1", port), timeout=10)
            if i < body:
                sock.sendall(b"POST /v1/generate HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                             b"Content-Type: application/x-www-form-urlencoded\r\nContent-Length: 1000\r\n\r\nprompt=")
                self.kind.append("body")
            else:
                sock.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n")
                self.kind.append("header")
            sock.setblocking(False)
            self.socks.append(sock)
            self.opened.append(time.time())
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _end(self, i):
        if i not in self.ended:
            self.ended[i] = time.time()
            self.socks[i].close()

    def _run(self):
        next_byte = time.time() + 1
        for _ in range(100000):
            if self._stop.is_set() or len(self.ended) == len(self.socks):
                return
            live = [i for i in range(len(self.socks)) if i not in self.ended]
            poller, by_fd = select.poll(), {}
            for i in live:  # poll, not select: fds above 1024 with the long version's 1024 slots
                by_fd[self.socks[i].fileno()] = i
                poller.register(self.socks[i], select.POLLIN)
            for fd, _ in poller.poll(100):  # an answer (408, 503) or the end of the connection: shed
                self._end(by_fd[fd])
            if time.time() >= next_byte:
                next_byte += 1
                for i in live:
                    if i in self.ended:
                        continue
                    try:
                        self.socks[i].send(b"a" if self.kind[i] == "body" else b"X")
                    except OSError:
                        self._end(i)

    def stop(self):
        self._stop.set()
        self._thread.join(10)
        for i in range(len(self.socks)):
            self._end(i)

    def overdue(self, kind, allowed_s, now):
        """Connections of `kind` still open (or ended) later than `allowed_s` after they opened."""
        return [i for i in range(len(self.socks)) if self.kind[i] == kind
                and self.ended.get(i, now) - self.opened[i] > allowed_s]


def test_slowloris_is_shed_and_others_are_served():
    cfg = config(limits={"max_connections": SLOTS, "header_timeout_s": HEADER_TIMEOUT_S,
                         "min_body_bytes_per_s": MIN_BODY_RATE, "idle_timeout_s": 300, "request_timeout_s": 60})
    with StressServer(cfg) as s:
        # 1. Every slot taken by tricklers: /health must answer again once the header deadline passed.
        t = Tricklers(s.port, SLOTS, body=BODY_TRICKLERS)
        all_open = time.time()
        health_back = None
        deadline = all_open + BODY_SHED_S + 2
        while time.time() < deadline:
            try:
                if requests.get(s.url + "/health", timeout=2).status_code == 200 and health_back is None:
                    health_back = time.time() - all_open
            except requests.RequestException:
                pass
            if health_back is not None and len(t.ended) == SLOTS:
                break
            time.sleep(0.25)
        now = time.time()
        late_headers = t.overdue("header", HEADER_TIMEOUT_S + HEADER_SLACK_S, now)
        late_bodies = t.overdue("body", BODY_SHED_S, now)
        shed_s = sorted(t.ended[i] - t.opened[i] for i in t.ended)
        t.stop()
        normal_after = normal_client_completes(s)

        # 2. Half the slots trickling: /health and a normal client are served meanwhile, at once.
        half = Tricklers(s.port, SLOTS // 2)
        try:
            health_during = requests.get(s.url + "/health", timeout=5).status_code
            normal_during = normal_client_completes(s)
        finally:
            half.stop()
        record("slowloris", slots=SLOTS, body_tricklers=BODY_TRICKLERS, header_timeout_s=HEADER_TIMEOUT_S,
               health_back_after_s=None if health_back is None else round(health_back, 2),
               shed=len(shed_s), shed_median_s=round(shed_s[len(shed_s) // 2], 2) if shed_s else None,
               shed_max_s=round(shed_s[-1], 2) if shed_s else None, late_headers=len(late_headers),
               late_bodies=len(late_bodies), health_during_half=health_during)

        assert s.alive()
        assert not late_headers, f"{len(late_headers)} of {SLOTS - BODY_TRICKLERS} header tricklers not shed in time"
        assert not late_bodies, f"{len(late_bodies)} of {BODY_TRICKLERS} body tricklers not shed in {BODY_SHED_S} s"
        assert health_back is not None and health_back <= HEADER_TIMEOUT_S + HEADER_SLACK_S, \
            f"/health back after {health_back} s"
        assert normal_after and normal_during and health_during == 200


# --- slow readers ---
READERS = scale(4, 8)
PROMPT = "lorem ipsum " * (512 * 1024 // 12)   # ~512 KiB: every frame repeats it
REQUESTS_PER_READER = 3
QUEUE_CAP = 4 * MiB                              # limits.max_ws_queued_bytes default
RSS_ALLOWANCE = READERS * 2 * QUEUE_CAP + 64 * MiB


def test_slow_readers_are_closed_and_memory_stays_bounded():
    cfg = config(limits={"max_ws_message_bytes": 2 * MiB, "max_queue": 64}, stream={"every_words": 1})
    with StressServer(cfg) as s:
        # Warm-up: one large-prompt request read normally, so the baseline includes its working set.
        warm = RawWebSocket(s.port, "warm")
        warm.send_text(new_request(prompt=PROMPT, length=8, batch_size=1, seed=1))
        for _ in range(1000):
            opcode, payload = warm.read_message(60)
            if opcode == 1 and json.loads(payload)["message"]["message_type"] != "updated_response":
                break
        warm.close()
        time.sleep(1)
        base_rss = s.rss()
        peak = base_rss

        readers = [RawWebSocket(s.port, f"slow-{i}", rcvbuf=4096) for i in range(READERS)]
        for r in range(REQUESTS_PER_READER):
            for i, ws in enumerate(readers):
                try:
                    ws.send_text(new_request(prompt=PROMPT, length=40, batch_size=4, seed=1000 * r + i))
                except OSError:
                    pass  # already closed by the server
            for _ in range(8):  # let the frames pile up, sampling memory
                time.sleep(0.25)
                peak = max(peak, s.rss())
        health = s.health()
        normal = normal_client_completes(s)
        for _ in range(8):
            time.sleep(0.25)
            peak = max(peak, s.rss())

        # Now read: each slow reader gets at most what was queued (plus socket buffers), then a close.
        # A reader ends either closed by the server (1008/1013: its queue passed the byte cap) or,
        # when coalescing the waiting updated_response kept it under the cap, with the
        # completed_response of its last request: nothing it was promised is lost.
        last_seed = 1000 * (REQUESTS_PER_READER - 1)
        received, codes = [], []
        for i, ws in enumerate(readers):
            total, code = 0, None
            try:
                for _ in range(100000):
                    opcode, payload = ws.read_message(10)
                    total += len(payload)
                    if opcode == 8:
                        code = int.from_bytes(payload[:2], "big") if len(payload) >= 2 else 1005
                        break
                    if opcode == 1:
                        m = json.loads(payload)["message"]
                        if m["message_type"] == "completed_response" and m.get("seed") == last_seed + i:
                            code = "completed"
                            break
            except (OSError, ConnectionError) as e:
                code = type(e).__name__
            ws.close()
            received.append(total)
            codes.append(code)
        record("slow_readers", readers=READERS, prompt_kib=len(PROMPT) // 1024, base_rss_mib=round(base_rss / MiB, 1),
               peak_rss_mib=round(peak / MiB, 1), growth_mib=round((peak - base_rss) / MiB, 1),
               allowance_mib=RSS_ALLOWANCE // MiB, received_mib=[round(x / MiB, 1) for x in received],
               close_codes=codes, health=health, normal_completed=normal)

        assert s.alive()
        assert health == 200 and normal
        assert peak - base_rss <= RSS_ALLOWANCE, \
            f"RSS grew {(peak - base_rss) / MiB:.0f} MiB for {READERS} clients that never read"
        assert all(c in (1008, 1013, "completed") for c in codes), \
            f"slow readers neither closed with 1008/1013 nor given their last completed_response: {codes}"

"""Soak: mixed load (WebSocket sessions, some vanishing mid-stream; completions, streamed and not,
repeated and new; form posts; bad requests; /health and /metrics) for a while (short: 45 s, long:
10 min), RSS sampled every few seconds. After a warm-up (the first quarter), RSS stays flat:
the mean of the last quarter of the samples is within max(16 MiB, 10 %) of the mean of the
quarter after the warm-up. Every answer is the expected one and the server stays up."""
import asyncio
import json
import threading

import requests
import websockets

from stress_support import (WS_PATH, MiB, RawWebSocket, RssSampler, StressServer, config, new_request, record,
                            scale)

DURATION_S = scale(45, 600)
SAMPLE_S = scale(1, 5)
MAX_ITERATIONS = 100000  # per load thread
TOLERANCE_FRACTION, TOLERANCE_BYTES = 0.10, 16 * MiB


class Tally:
    def __init__(self):
        self.counts, self.unexpected, self.lock = {}, [], threading.Lock()

    def add(self, what, ok, detail=""):
        with self.lock:
            self.counts[what] = self.counts.get(what, 0) + 1
            if not ok and len(self.unexpected) < 50:
                self.unexpected.append(f"{what}: {detail}")


def http_load(s, stop, tally, k):
    session = requests.Session()
    for n in range(MAX_ITERATIONS):
        if stop.is_set():
            return
        kind = n % 6
        try:
            if kind in (0, 1):  # repeated (cache hits) and new completions
                r = session.post(s.url + "/v1/completions", timeout=60,
                                 json={"prompt": f"Soak {n % 10 if kind == 0 else f'{k}-{n}'}", "max_tokens": 8,
                                       "seed": 3})
                tally.add("completion", r.status_code == 200, r.status_code)
            elif kind == 2:  # server-sent events
                with session.post(s.url + "/v1/completions", timeout=60, stream=True,
                                  json={"prompt": f"Stream {k} {n}", "max_tokens": 8, "stream": True}) as r:
                    text = r.content.decode()
                tally.add("sse", r.status_code == 200 and text.rstrip().endswith("data: [DONE]"), r.status_code)
            elif kind == 3:  # the original backend's form post
                r = session.post(s.url + "/v1/generate", data={"prompt": f"Form {n}", "length": "6", "batch_size": "2"},
                                 timeout=60)
                tally.add("generate", r.status_code == 200, r.status_code)
            elif kind == 4:  # bad input gets a clear 4xx
                r = session.post(s.url + "/v1/completions", data=b"{not json", timeout=60,
                                 headers={"Content-Type": "application/json"})
                tally.add("bad_request", r.status_code == 400 and "error" in r.json(), r.status_code)
            else:
                r = session.post(s.url + "/v1/tokenize", json={"prompt": f"Tokenize {n}"}, timeout=60)
                tally.add("tokenize", r.status_code == 200, r.status_code)
        except (requests.RequestException, ValueError) as e:
            tally.add(f"http kind {kind}", False, type(e).__name__)


def ws_load(s, stop, tally, k):
    async def session(n):
        async with websockets.connect(s.ws_url + WS_PATH.format(f"soak-{k}-{n}"), open_timeout=30) as ws:
            for r in range(3):
                await ws.send(new_request(prompt=f"Soak session {n % 20} turn {r}", length=12, batch_size=3, seed=r))
                while True:
                    m = json.loads(await asyncio.wait_for(ws.recv(), 60))["message"]
                    if m["message_type"] != "updated_response":
                        break
                tally.add("ws", m["message_type"] == "completed_response", m["message_type"])

    for n in range(MAX_ITERATIONS):
        if stop.is_set():
            return
        try:
            if n % 5 == 4:  # vanish mid-stream with a reset
                ws = RawWebSocket(s.port, f"soak-gone-{k}-{n}")
                ws.send_text(new_request(length=30, batch_size=4, seed=n))
                ws.read_message(30)
                ws.reset()
                tally.add("ws_vanish", True)
            else:
                asyncio.run(session(n))
        except (OSError, ConnectionError, asyncio.TimeoutError, websockets.exceptions.WebSocketException) as e:
            tally.add("ws", False, type(e).__name__)


def probe_load(s, stop, tally):
    for _ in range(MAX_ITERATIONS):
        if stop.wait(0.5):
            return
        try:
            tally.add("health", requests.get(s.url + "/health", timeout=10).status_code == 200)
            tally.add("metrics", requests.get(s.url + "/metrics", timeout=10).status_code == 200)
        except requests.RequestException as e:
            tally.add("probe", False, type(e).__name__)


def test_soak_rss_stays_flat():
    cfg = config(cache={"memory_entries": 200}, stream={"every_words": 2})
    with StressServer(cfg) as s:
        stop, tally = threading.Event(), Tally()
        threads = ([threading.Thread(target=http_load, args=(s, stop, tally, k)) for k in range(2)] +
                   [threading.Thread(target=ws_load, args=(s, stop, tally, k)) for k in range(2)] +
                   [threading.Thread(target=probe_load, args=(s, stop, tally))])
        with RssSampler(s, interval=SAMPLE_S) as sampler:
            for t in threads:
                t.start()
            stop.wait(DURATION_S)
            stop.set()
            for t in threads:
                t.join(90)
        hung = [t.name for t in threads if t.is_alive()]
        rss = [v for _, v in sampler.samples]
        q = len(rss) // 4
        after_warmup, last = rss[q:2 * q], rss[-q:]
        first_mean, last_mean = sum(after_warmup) / len(after_warmup), sum(last) / len(last)
        allowed = max(TOLERANCE_BYTES, TOLERANCE_FRACTION * first_mean)
        record("soak", duration_s=DURATION_S, samples=len(rss), requests=tally.counts,
               unexpected=tally.unexpected[:10], rss_start_mib=round(rss[0] / MiB, 1),
               rss_after_warmup_mib=round(first_mean / MiB, 1), rss_last_quarter_mib=round(last_mean / MiB, 1),
               rss_max_mib=round(max(rss) / MiB, 1), allowed_growth_mib=round(allowed / MiB, 1))

        assert not hung, f"load threads did not finish: {hung}"
        assert s.alive()
        assert not tally.unexpected, tally.unexpected[:10]
        assert q >= 3, f"too few RSS samples: {len(rss)}"
        assert last_mean - first_mean <= allowed, \
            f"RSS grew from {first_mean / MiB:.1f} to {last_mean / MiB:.1f} MiB (allowed {allowed / MiB:.1f})"
        assert s.health() == 200

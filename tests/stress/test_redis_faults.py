"""Redis frozen (SIGSTOP) and then killed while clients keep asking: 0 failed requests. The
latency of each phase is reported (a frozen Redis must not make every request wait out the
command timeout: the circuit breaker marks it down)."""
import concurrent.futures
import os
import signal
import threading
import time

import requests

from stress_support import Redis, StressServer, config, percentile, record, scale

CLIENTS = 8
PHASES = [("normal", scale(5, 20)), ("frozen", scale(8, 60)), ("resumed", scale(4, 20)), ("killed", scale(6, 60)),
          ("restarted", scale(4, 20))]
MAX_REQUESTS_PER_CLIENT = 5000
HOT_PROMPTS = 16  # most requests repeat one of these: cache hits


class Load:
    """CLIENTS threads posting /v1/completions until stopped; every result is tagged with the phase."""

    def __init__(self, url):
        self.url, self.phase, self.results = url, "normal", []
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._pool = concurrent.futures.ThreadPoolExecutor(CLIENTS)
        self._futures = [self._pool.submit(self._client, c) for c in range(CLIENTS)]

    def _client(self, c):
        session = requests.Session()
        for n in range(MAX_REQUESTS_PER_CLIENT):
            if self._stop.is_set():
                return
            hot = n % 4 != 0
            body = {"prompt": f"Hot prompt {n % HOT_PROMPTS}" if hot else f"Cold prompt {c} {n}", "max_tokens": 6,
                    "seed": 7 if hot else n}
            phase, t = self.phase, time.perf_counter()
            try:
                r = session.post(self.url + "/v1/completions", json=body, timeout=30)
                ok, status = r.status_code == 200 and r.json()["choices"], r.status_code
            except (requests.RequestException, ValueError) as e:
                ok, status = False, type(e).__name__
            with self._lock:
                self.results.append((phase, hot, bool(ok), status, time.perf_counter() - t))

    def stop(self):
        self._stop.set()
        for f in self._futures:
            f.result(timeout=60)
        self._pool.shutdown()


def test_frozen_and_killed_redis_fail_no_request():
    redis = Redis()
    try:
        with StressServer(config(cache={"redis": redis.url, "memory_entries": 1000}, limits={"max_queue": 256})) as s:
            load, up_samples = Load(s.url), {}
            try:
                for name, seconds in PHASES:
                    load.phase = name
                    if name == "frozen":
                        os.kill(redis.proc.pid, signal.SIGSTOP)
                    elif name == "resumed":
                        os.kill(redis.proc.pid, signal.SIGCONT)
                    elif name == "killed":
                        redis.kill()
                    elif name == "restarted":
                        redis.start()
                    # writeup_cache_redis_up through the phase (reported: is a frozen Redis seen as down?)
                    for _ in range(int(seconds / 0.5)):
                        time.sleep(0.5)
                        up_samples.setdefault(name, []).append(s.metric("writeup_cache_redis_up"))
            finally:
                try:
                    os.kill(redis.proc.pid, signal.SIGCONT)
                except ProcessLookupError:
                    pass
                load.stop()
            figures = {}
            for name, _ in PHASES:
                rows = [r for r in load.results if r[0] == name]
                hits_ms = [r[4] * 1000 for r in rows if r[1] and r[2]]
                figures[name] = {"requests": len(rows), "failed": sum(not r[2] for r in rows),
                                 "hot_p50_ms": round(percentile(hits_ms, 50), 1),
                                 "hot_p99_ms": round(percentile(hits_ms, 99), 1),
                                 "redis_up_fraction": round(sum(up_samples.get(name, [0])) /
                                                            max(1, len(up_samples.get(name, []))), 2)}
            failures = [r for r in load.results if not r[2]]
            record("redis_faults", clients=CLIENTS, phases=figures,
                   redis_errors=s.metric("writeup_cache_errors_total"), failures=[f[3] for f in failures[:10]])
            assert s.alive()
            assert all(figures[name]["requests"] > 0 for name, _ in PHASES), figures
            assert not failures, f"{len(failures)} failed requests: {[(f[0], f[3]) for f in failures[:10]]}"
            assert s.health() == 200
    finally:
        if redis.proc.poll() is None:
            redis.kill()

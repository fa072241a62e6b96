"""The cache under a frozen Redis (SIGSTOP): memory hits keep being answered, the circuit
breaker marks Redis down and a background probe brings it back after SIGCONT. Bounded in count
and time; loopback only."""
import os
import signal
import threading
import time

import requests

from conftest import DATA, Redis, Server, metric

HITS = 240        # cached requests sent while Redis is frozen
CLIENTS = 8       # concurrent clients sending them
MISSES = 6        # distinct requests that must go to Redis (and find it frozen)
LIMIT_S = 30      # generous bound on every wait
PROBE_SAMPLES = 20  # looks at writeup_cache_redis_up while Redis stays frozen, 0.1 s apart


def wait_for(predicate, limit=LIMIT_S):
    deadline = time.time() + limit
    while time.time() < deadline:
        if predicate():
            return True
        time.sleep(0.1)
    return predicate()


def completion(s, prompt, seed=7):
    body = {"model": "tiny-gpt2", "prompt": prompt, "max_tokens": 8, "seed": seed}
    return requests.post(s.url + "/v1/completions", json=body, timeout=LIMIT_S)


def test_frozen_redis_memory_hits_served_breaker_opens_and_recovers():
    r = Redis()
    s = Server("--redis", r.url)
    frozen = False
    try:
        assert wait_for(lambda: metric(s, "writeup_cache_redis_up") == 1)
        warm = completion(s, "Frozen redis hit")
        assert warm.status_code == 200
        expected = warm.json()["choices"]

        os.kill(r.proc.pid, signal.SIGSTOP)
        frozen = True
        started = time.time()
        hits_before = metric(s, "writeup_cache_hits_total", backend="memory")
        joins_before = metric(s, "writeup_cache_joins_total", scope="local")
        results, errors = [], []
        lock = threading.Lock()

        def hit_client(count):
            for _ in range(count):
                try:
                    resp = completion(s, "Frozen redis hit")
                    with lock:
                        results.append((resp.status_code, resp.json().get("choices")))
                except (requests.RequestException, ValueError) as e:
                    with lock:
                        errors.append(repr(e))

        def miss_client():
            for i in range(MISSES):  # each miss asks Redis first: these trip the breaker
                try:
                    resp = completion(s, f"Frozen redis miss {i}", seed=100 + i)
                    with lock:
                        results.append((resp.status_code, None))
                except (requests.RequestException, ValueError) as e:
                    with lock:
                        errors.append(repr(e))

        threads = [threading.Thread(target=hit_client, args=(HITS // CLIENTS,)) for _ in range(CLIENTS)]
        threads.append(threading.Thread(target=miss_client))
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=LIMIT_S * 2)
        assert not any(t.is_alive() for t in threads)
        assert errors == []
        assert len(results) == HITS + MISSES
        assert all(code == 200 for code, _ in results), [c for c, _ in results if c != 200]
        assert all(choices == expected for code, choices in results if choices is not None)
        assert time.time() - started < LIMIT_S
        # Every repeated request was a memory hit (or joined an identical one in flight).
        served = metric(s, "writeup_cache_hits_total", backend="memory") + \
            metric(s, "writeup_cache_joins_total", scope="local")
        assert served >= hits_before + joins_before + HITS
        # Redis is seen as down, and stays down while frozen: a TCP connection that the kernel
        # accepts on its behalf does not count as "up" (only a probe's PONG does).
        assert wait_for(lambda: metric(s, "writeup_cache_redis_up") == 0)
        assert metric(s, "writeup_cache_errors_total", backend="redis") >= 3
        for i in range(PROBE_SAMPLES):
            if i % 5 == 0:
                assert completion(s, f"Still frozen {i}", seed=200 + i).status_code == 200
            assert metric(s, "writeup_cache_redis_up") == 0, f"sample {i}"
            time.sleep(0.1)
        assert requests.get(s.url + "/health", timeout=5).status_code == 200

        os.kill(r.proc.pid, signal.SIGCONT)
        frozen = False
        assert wait_for(lambda: metric(s, "writeup_cache_redis_up") == 1)  # the probe's work
        # Redis is used again: a new response is stored there.
        key_resp = requests.post(s.url + "/v1/generate", data={"prompt": "After the thaw", "length": "4",
                                                               "batch_size": "1"}, timeout=LIMIT_S)
        assert key_resp.status_code == 200
        key = key_resp.json()["message"]["cache_key"]
        assert wait_for(lambda: r.cli("EXISTS", key) == "1", limit=10)
    finally:
        if frozen:
            os.kill(r.proc.pid, signal.SIGCONT)
        s.stop()
        r.kill()


def test_claim_flood_while_redis_is_frozen_gets_429_not_a_pile_up():
    """Distinct requests while Redis is frozen queue cache lookups behind a stuck Redis call:
    every request gets an answer, 200 or 429 queue_full (the claim queue and the engine queue
    are both bounded by max_queue), and none waits for ever. The exact bound is checked by the
    unit test Cache.ClaimQueueIsBoundedWhileRedisIsSlow."""
    r = Redis()
    cfg = {"models": [{"name": "tiny-gpt2", "path": str(DATA / "tiny-gpt2")}],
           "cache": {"redis": r.url}, "limits": {"max_queue": 2}}
    s = Server(config=cfg)
    frozen = False
    try:
        assert wait_for(lambda: metric(s, "writeup_cache_redis_up") == 1)
        os.kill(r.proc.pid, signal.SIGSTOP)
        frozen = True
        codes, errors = [], []
        lock = threading.Lock()

        def client(i):
            try:
                resp = completion(s, f"Flood {i}", seed=i)
                body = resp.json()
                with lock:
                    codes.append((resp.status_code, body.get("error", {}).get("code")))
            except (requests.RequestException, ValueError) as e:
                with lock:
                    errors.append(repr(e))

        threads = [threading.Thread(target=client, args=(i,)) for i in range(16)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=LIMIT_S * 2)
        assert not any(t.is_alive() for t in threads)
        assert errors == []
        assert len(codes) == 16
        assert all(c == 200 or (c == 429 and code == "queue_full") for c, code in codes), codes
        assert any(c == 429 for c, _ in codes), codes
        assert any(c == 200 for c, _ in codes), codes
    finally:
        if frozen:
            os.kill(r.proc.pid, signal.SIGCONT)
        s.stop()
        r.kill()


def test_memory_hit_is_answered_while_the_engine_queue_is_full():
    # A slow engine (50 ms a step), one sequence slot and a queue of 1: once one request runs
    # and one waits, a new request is refused, but one the memory cache holds is still answered.
    cfg = {"models": [{"name": "tiny-gpt2", "path": str(DATA / "tiny-gpt2"), "max_batch": 1}],
           "limits": {"max_queue": 1, "max_batch_size": 1}}
    s = Server(config=cfg, env={"WRITEUP_TEST_STEP_DELAY_MS": "50"})
    try:
        assert completion(s, "Cached before the rush").status_code == 200
        generations = metric(s, "writeup_generations_total")
        busy = []

        def slow(i):
            body = {"model": "tiny-gpt2", "prompt": "Keep the engine busy", "max_tokens": 40, "seed": 100 + i}
            busy.append(requests.post(s.url + "/v1/completions", json=body, timeout=LIMIT_S).status_code)

        threads = [threading.Thread(target=slow, args=(i,)) for i in range(2)]
        for t in threads:
            t.start()
            time.sleep(0.3)  # the first is admitted (running) before the second queues
        # One running, one queued: the engine is full.
        assert wait_for(lambda: metric(s, "writeup_generations_total") >= generations + 2, 10), (busy, metric(s, "writeup_generations_total"), generations)
        refused = completion(s, "A new request now", seed=999)
        hit = completion(s, "Cached before the rush")
        for t in threads:
            t.join(LIMIT_S)
        assert refused.status_code == 429 and refused.json()["error"]["code"] == "queue_full"
        assert hit.status_code == 200, hit.text
        assert busy == [200, 200]
        assert metric(s, "writeup_cache_hits_total", backend="memory") >= 1
    finally:
        assert s.stop() == 0

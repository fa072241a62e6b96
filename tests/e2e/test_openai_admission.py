"""Admission before the status line (issue 13): a streaming /v1/completions request the engine
cannot queue gets a real 429 with Retry-After, with the response cache on (the default), and a
request with several prompts is admitted whole or not at all."""
import concurrent.futures
import time

import pytest
import requests

from conftest import DATA, Server, config, metric

WAIT_S = 30  # bound on every wait for the server to reach a state


@pytest.fixture()
def busy_server():
    # One sequence running and one request queued at most; 40 ms per step so that a long request
    # keeps the worker busy.
    models = [{"name": "tiny-gpt2", "path": str(DATA / "tiny-gpt2"), "max_batch": 1}]
    s = Server(config=config(models=models, limits={"max_queue": 1}), env={"WRITEUP_TEST_STEP_DELAY_MS": "40"})
    yield s
    s.stop()


def wait_for(pred):
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        if pred():
            return
        time.sleep(0.02)
    raise AssertionError("the server never reached the state the test needs")


def long_request(s, seed):
    body = {"prompt": "Keep the worker busy", "max_tokens": 40, "seed": seed, "temperature": 1}
    return requests.post(s.url + "/v1/completions", json=body, timeout=120)


class Running:
    """A long streaming request, generating once the constructor returns (its first chunk came:
    the worker runs it, and its cache claim was answered)."""

    def __init__(self, s, seed):
        body = {"prompt": "Keep the worker busy", "max_tokens": 40, "seed": seed, "temperature": 1, "stream": True}
        self.response = requests.post(s.url + "/v1/completions", json=body, timeout=120, stream=True)
        assert self.response.status_code == 200, self.response.text
        self.lines = self.response.iter_lines()
        for line in self.lines:
            if line.startswith(b"data: "):
                break

    def finish(self):
        """True when the stream ends with [DONE]."""
        return any(line == b"data: [DONE]" for line in self.lines)


def fill(s, pool):
    """One request running, one queued: the queue (max_queue 1) is full."""
    running = Running(s, 1)
    queued = pool.submit(long_request, s, 2)
    wait_for(lambda: metric(s, "writeup_queue_depth") >= 1)
    return running, queued


def test_a_refused_stream_is_a_429_with_retry_after_even_with_the_cache_on(busy_server):
    s = busy_server
    # A greedy answer stored before the queue fills: a memory hit is answered even while full.
    cached = {"prompt": "Stored before", "max_tokens": 3, "temperature": 0}
    assert requests.post(s.url + "/v1/completions", json=cached, timeout=60).status_code == 200
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        running, queued = fill(s, pool)
        r = requests.post(s.url + "/v1/completions", timeout=60, stream=True,
                          json={"prompt": "No room", "max_tokens": 5, "seed": 3, "temperature": 1, "stream": True})
        assert r.status_code == 429, r.text
        assert r.headers["Retry-After"] == "1"
        assert r.json()["error"]["code"] == "queue_full"
        hit = requests.post(s.url + "/v1/completions", timeout=60, stream=True, json={**cached, "stream": True})
        assert hit.status_code == 200
        assert b"[DONE]" in hit.content
        assert running.finish()
        assert queued.result().status_code == 200


def test_prompts_are_admitted_together_or_not_at_all(busy_server):
    s = busy_server
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        running = Running(s, 1)
        # Room for one more request in the queue; two prompts need two places.
        for stream in (False, True):
            r = requests.post(s.url + "/v1/completions", timeout=60, stream=stream,
                              json={"prompt": ["First of two", "Second of two"], "max_tokens": 5, "seed": 4,
                                    "temperature": 1, "stream": stream})
            assert r.status_code == 429, r.text
            assert r.headers["Retry-After"] == "1"
            # the prompt that had a place was cancelled: the queue empties without running it
            wait_for(lambda: metric(s, "writeup_queue_depth") == 0)
        assert running.finish()
    # (Each prompt takes a place in the queue: with max_queue 1 two prompts rarely both fit.)

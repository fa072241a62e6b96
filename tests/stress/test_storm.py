"""A storm of WebSocket clients at once (short: 150, long: 500): every client gets a
completed_response or a clear error frame (queue_full), never a silent close or a hang, while
/health, probed from another process, keeps answering fast."""
import asyncio
import json
import time

import pytest
import websockets

from stress_support import WS_PATH, HealthProber, StressServer, config, new_request, percentile, record, scale

CLIENTS = scale(150, 500)
MAX_QUEUE = scale(48, 128)      # fewer than the clients: some get queue_full, most complete
FRAME_TIMEOUT_S = 60            # a client that hears nothing for this long is hung
HEALTH_P99_BOUND_MS = 1000      # generous, for a noisy shared 2-core box; the target (100 ms) is reported


async def one_client(ws_url, i):
    """'completed', 'error:<code>', or a failure: 'closed:<code>', 'hang', 'connect:<what>'."""
    t = time.perf_counter()
    try:
        async with websockets.connect(ws_url + WS_PATH.format(f"storm-{i}"), open_timeout=60, close_timeout=5,
                                      max_size=None) as ws:
            # One seed in five is shared, so single flight and the cache take part too.
            seed = i if i % 5 else 100000 + i % 7
            await ws.send(new_request(prompt=f"Storm client {i % 13} says", length=16, batch_size=2, seed=seed))
            while True:
                try:
                    raw = await asyncio.wait_for(ws.recv(), FRAME_TIMEOUT_S)
                except asyncio.TimeoutError:
                    return "hang", time.perf_counter() - t
                except websockets.exceptions.ConnectionClosed as e:
                    return f"closed:{e.code}", time.perf_counter() - t
                m = json.loads(raw)["message"]
                if m["message_type"] == "completed_response":
                    return "completed", time.perf_counter() - t
                if m["message_type"] in ("error", "oom_response"):
                    code = (m.get("error") or {}).get("code") or m["message_type"]
                    return f"error:{code}", time.perf_counter() - t
    except (OSError, asyncio.TimeoutError, websockets.exceptions.WebSocketException) as e:
        return f"connect:{type(e).__name__}:{getattr(e, 'status_code', '')}", time.perf_counter() - t


async def storm(ws_url):
    return await asyncio.wait_for(asyncio.gather(*(one_client(ws_url, i) for i in range(CLIENTS))),
                                  timeout=FRAME_TIMEOUT_S * 5)


@pytest.fixture(scope="module")
def storm_run():
    with StressServer(config(limits={"max_connections": 1024, "max_queue": MAX_QUEUE, "request_timeout_s": 120})) as s:
        queue_full_before = s.metric("writeup_requests_total", route="/ws/async/writeup", status="429")
        prober = HealthProber(s.port, interval=0.02)
        time.sleep(0.5)
        t = time.perf_counter()
        results = asyncio.run(storm(s.ws_url))
        wall = time.perf_counter() - t
        time.sleep(0.5)
        health = prober.stop().summary()
        outcomes = {}
        for outcome, _ in results:
            outcomes[outcome] = outcomes.get(outcome, 0) + 1
        done_s = [d for o, d in results if o == "completed"]
        figures = {"clients": CLIENTS, "max_queue": MAX_QUEUE, "wall_s": round(wall, 2), "outcomes": outcomes,
                   "completed_p50_s": round(percentile(done_s, 50), 3),
                   "completed_p99_s": round(percentile(done_s, 99), 3), "health": health}
        record("storm", **figures)
        yield {
            "results": results, "outcomes": outcomes, "health": health, "prober": prober, "alive": s.alive(),
            "ws_429": s.metric("writeup_requests_total", route="/ws/async/writeup", status="429") - queue_full_before,
            "health_after": s.health(),
        }


def test_every_storm_client_gets_a_response_or_a_clear_error(storm_run):
    outcomes = storm_run["outcomes"]
    bad = {o: n for o, n in outcomes.items() if o != "completed" and not o.startswith("error:")}
    assert not bad, f"silent closes, hangs or refused connections: {bad} (all: {outcomes})"
    assert outcomes.get("completed", 0) > 0, outcomes
    # Every error frame names its code (queue_full; timeout when the box is too loaded to finish
    # within limits.request_timeout_s is still a clear answer).
    assert "error:error" not in outcomes and "error:None" not in outcomes, outcomes
    assert storm_run["alive"] and storm_run["health_after"] == 200


def test_health_answers_during_the_storm(storm_run):
    health, prober = storm_run["health"], storm_run["prober"]
    assert not prober.failures, f"/health failed during the storm: {prober.failures[:10]}"
    assert health["probes"] >= 20, health
    # The target is p99 < 100 ms (reported in RELIABILITY.md); CI only asserts a bound that holds
    # on a loaded, shared 2-core machine.
    assert health["p99_ms"] < HEALTH_P99_BOUND_MS, health


def test_queue_full_websocket_requests_are_counted_as_429(storm_run):
    refused = storm_run["outcomes"].get("error:queue_full", 0)
    assert storm_run["ws_429"] == refused, (
        f"{refused} WebSocket requests were answered queue_full, /metrics counts {storm_run['ws_429']} with status 429")

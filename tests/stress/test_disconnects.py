"""200 clients vanish mid-stream (TCP RST through SO_LINGER 0, or a plain close without a close
frame; after their first frame or right after sending): the work is cancelled (running
sequences and queue back to 0, far fewer tokens generated than the requests asked for) and the
server's file descriptors and memory come back to their baseline."""
import concurrent.futures
import json
import socket
import time

from stress_support import MiB, RawWebSocket, StressServer, config, new_request, record

CLIENTS = 200
WAVE = 50                  # clients connected at once
LENGTH, BATCH = 40, 4      # 4-token prompt + 40 <= the tiny model's context (64)
WARM = 8                   # warm-up requests, completed normally
SETTLE_S = 30              # time allowed for the server to notice and clean up
FD_TOLERANCE = 4
RSS_TOLERANCE = 32 * MiB   # allocator slack; a leaked session per client would be far more


def complete_one(port, i):
    ws = RawWebSocket(port, f"warm-{i}")
    try:
        ws.send_text(new_request(length=LENGTH, batch_size=BATCH, seed=10_000 + i))
        deadline = time.time() + 120
        while time.time() < deadline:
            opcode, payload = ws.read_message(120)
            if opcode == 1 and json.loads(payload)["message"]["message_type"] != "updated_response":
                return
        raise AssertionError("warm-up request did not complete")
    finally:
        ws.close()


def vanish(port, i):
    """Sends a request, maybe waits for the first frame, then disappears. Returns whether a frame came."""
    ws = RawWebSocket(port, f"gone-{i}")
    got_frame = False
    try:
        ws.send_text(new_request(length=LENGTH, batch_size=BATCH, seed=i))
        if i % 4 < 2:  # mid-stream: after the first frame
            try:
                ws.read_message(30)
                got_frame = True
            except (socket.timeout, ConnectionError):
                pass
    finally:
        if i % 2 == 0:
            ws.reset()   # RST
        else:
            ws.close()   # FIN, no close frame
    return got_frame


def test_abrupt_disconnects_cancel_the_work_and_free_everything():
    cfg = config(limits={"max_queue": 256}, stream={"every_words": 1})
    with StressServer(cfg) as s:
        # Warm up with the same kind of requests, completed normally: pools, allocator arenas and
        # the cache reach their working size before the baseline is taken.
        with concurrent.futures.ThreadPoolExecutor(WAVE) as pool:
            list(pool.map(lambda i: complete_one(s.port, i), range(WARM)))
        time.sleep(1)
        base_fds, base_rss = s.fds(), s.rss()
        tokens_before = s.metric("writeup_tokens_generated_total")

        mid_stream = 0
        with concurrent.futures.ThreadPoolExecutor(WAVE) as pool:
            for wave in range(CLIENTS // WAVE):
                mid_stream += sum(pool.map(lambda i: vanish(s.port, i), range(wave * WAVE, (wave + 1) * WAVE)))

        running = s.wait_metric("writeup_running_sequences", 0, SETTLE_S)
        queued = s.wait_metric("writeup_queue_depth", 0, SETTLE_S)
        connections = s.wait_metric("writeup_connections", 1, SETTLE_S)  # 1: the /metrics request itself
        deadline = time.time() + SETTLE_S
        while s.fds() > base_fds + FD_TOLERANCE and time.time() < deadline:
            time.sleep(0.2)
        fds, rss = s.fds(), s.rss()
        tokens = s.metric("writeup_tokens_generated_total") - tokens_before
        asked = CLIENTS * LENGTH * BATCH
        record("disconnects", clients=CLIENTS, mid_stream=mid_stream, base_fds=base_fds, fds=fds,
               base_rss_mib=round(base_rss / MiB, 1), rss_mib=round(rss / MiB, 1), tokens_generated=tokens,
               tokens_asked=asked, running=running, queued=queued, connections=connections)

        assert s.alive()
        assert mid_stream >= CLIENTS // 4, "too few clients left mid-stream for the test to mean anything"
        assert running == 0 and queued == 0, f"work left running: {running} sequences, {queued} queued"
        assert connections == 1, f"{connections} connections still open"
        assert fds <= base_fds + FD_TOLERANCE, f"fds {base_fds} -> {fds}"
        assert rss <= base_rss + RSS_TOLERANCE, f"RSS {base_rss / MiB:.1f} -> {rss / MiB:.1f} MiB"
        # Cancelled work stops: generating everything the vanished clients asked for would take `asked`.
        assert tokens < asked / 2, f"{tokens} of {asked} tokens generated for clients that had gone"
        assert s.health() == 200

#!/usr/bin/env python3
"""A real device out-of-memory in writeup-server, and the recovery (standard library only).

  oom_check.py --server BIN --model DIR --device cuda:0 --dtype float16 --mode real
               [--fraction auto|F] [--headroom-mb 8] --workdir DIR --out FILE
  oom_check.py ... --device cpu --mode simulated          (dry run: WRITEUP_TEST_OOM_OVER_TOKENS)

real mode:
  1. calibrate (--fraction auto): start the server without a limit, warm it with the small
     requests (4 at once, twice), read writeup_device_memory_reserved_bytes from /metrics
     (the caching allocator's reserved bytes), stop it;
  2. start it again with WRITEUP_CUDA_MEMORY_FRACTION = (reserved + headroom) / total memory:
     what the small requests need is cached, anything bigger than the headroom is not;
  3. warm it the same way, then send one big request (n = --big-n sequences, a prompt of
     ~70% of the context) and, while it runs, the 4 small requests; poll /ready throughout.
  Pass: every small request answers 200 with text, /ready never answers anything but 200,
  writeup_oom_total went up, and the server is still running. The big request may fail
  (503 out_of_memory) or succeed after the engine's split-in-halves retry: both are recovery.
simulated mode: no limit; WRITEUP_TEST_OOM_OVER_TOKENS=16 makes the engine throw
  c10::OutOfMemoryError for any forward chunk over 16 tokens - the same checks, on CPU.
"""
import argparse
import json
import os
import pathlib
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request

SMALL_PROMPT = "Hello"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http(method, url, body=None, timeout=120):
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, r.read().decode("utf-8", "replace")
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode("utf-8", "replace")
    except (urllib.error.URLError, OSError) as e:
        return 0, f"{type(e).__name__}: {e}"


def metric_sum(text, name):
    total, seen = 0.0, False
    for line in text.splitlines():
        if line.startswith(name + "{") or line.startswith(name + " "):
            try:
                total += float(line.rsplit(None, 1)[-1])
                seen = True
            except ValueError:
                pass
    return total if seen else None


class Server:
    def __init__(self, a, env_extra, tag):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        cfg = {
            "server": {"host": "127.0.0.1", "port": self.port, "io_threads": 2},
            "limits": {"max_queue": 64, "max_batch_size": a.big_n, "max_length": 256,
                       "request_timeout_s": 300},
            "cache": {"redis": None, "memory_entries": 0},  # every request really generates
            "models": [{"name": "m", "path": a.model, "device": a.device, "dtype": a.dtype,
                        "workers": 1, "max_batch": a.big_n}],
            "log_level": "info",
        }
        wd = pathlib.Path(a.workdir)
        wd.mkdir(parents=True, exist_ok=True)
        self.config = wd / f"oom-{tag}.json"
        self.config.write_text(json.dumps(cfg, indent=2))
        self.log_path = wd / f"oom-server-{tag}.log"
        env = dict(os.environ)
        env.update(env_extra)
        self.log = open(self.log_path, "w")
        self.proc = subprocess.Popen([a.server, "--config", str(self.config)], stdout=self.log,
                                     stderr=subprocess.STDOUT, env=env)

    def wait_ready(self, timeout):
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                return False
            if http("GET", self.url + "/ready", timeout=5)[0] == 200:
                return True
            try:  # a worker that cannot load leaves the server up and unready: do not wait for it
                text = self.log_path.read_text(errors="replace")
            except OSError:
                text = ""
            if "failed to load" in text or "[critical]" in text:
                return False
            time.sleep(0.1)
        return False

    def metric(self, name):
        status, text = http("GET", self.url + "/metrics", timeout=10)
        return metric_sum(text, name) if status == 200 else None

    def stop(self):
        alive = self.proc.poll() is None
        if alive:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()
        return alive

    def tail(self, n=30):
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""


def small_body(i):
    return {"model": "m", "prompt": SMALL_PROMPT, "max_tokens": 16, "n": 1, "temperature": 0.7, "seed": 100 + i}


def run_concurrently(url, bodies, timeout):
    results = [None] * len(bodies)

    def go(i, b):
        t = time.time()
        status, text = http("POST", url + "/v1/completions", b, timeout=timeout)
        try:
            j = json.loads(text)
        except ValueError:
            j = {"raw": text[:300]}
        results[i] = {"status": status, "seconds": round(time.time() - t, 2), "body": j}

    threads = [threading.Thread(target=go, args=(i, b)) for i, b in enumerate(bodies)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout + 5)
    return results


def small_ok(r):
    if not r or r["status"] != 200:
        return False
    ch = r["body"].get("choices") if isinstance(r["body"], dict) else None
    return bool(ch) and all("text" in c for c in ch)


def warm(s, n_small):
    return [small_ok(r) for _ in range(2) for r in run_concurrently(s.url, [small_body(i) for i in range(n_small)], 120)]


def total_memory_bytes():
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=memory.total", "--format=csv,noheader,nounits", "-i", "0"],
                             capture_output=True, text=True, timeout=30).stdout.strip()
        return int(float(out.splitlines()[0])) << 20
    except (OSError, ValueError, IndexError, subprocess.TimeoutExpired):
        return None


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--server", required=True)
    ap.add_argument("--model", required=True)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", default="auto")
    ap.add_argument("--mode", choices=["real", "simulated"], required=True)
    ap.add_argument("--fraction", default="auto")
    ap.add_argument("--headroom-mb", type=float, default=8)
    ap.add_argument("--big-n", type=int, default=64)
    ap.add_argument("--small", type=int, default=4)
    ap.add_argument("--prompt-tokens", type=int, default=700, help="the big request's prompt length")
    ap.add_argument("--ready-timeout", type=float, default=90)
    ap.add_argument("--workdir", required=True)
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    res = {"mode": a.mode, "device": a.device, "dtype": a.dtype, "problems": []}

    def finish(ok):
        res["passed"] = ok
        big = res.get("big") or {}
        res["summary"] = (f"{a.mode} OOM ({res.get('how', '').split(' (')[0]}): writeup_oom_total "
                          f"+{res.get('oom_total_delta', '?')}, big request (n={big.get('n')}) HTTP {big.get('status')}"
                          f"{' ' + str(big.get('error_code')) if big.get('error_code') else ''}, "
                          f"small requests {'all completed' if res.get('small') and all(x['ok'] for x in res['small']) else 'NOT all completed'}, "
                          f"/ready {'stayed 200' if res.get('ready_after') == 200 and not res.get('ready_not_200_during') else 'NOT always 200'}"
                          + (f"; problems: {'; '.join(p[:200] for p in res['problems'])}" if res["problems"] else ""))
        json.dump(res, open(a.out, "w"), indent=2)
        print(json.dumps({k: v for k, v in res.items() if k not in ("big", "small", "phase_b_small")}, indent=2))
        return 0 if ok else 1

    env = {}
    if a.mode == "simulated":
        env["WRITEUP_TEST_OOM_OVER_TOKENS"] = "16"
        res["how"] = "WRITEUP_TEST_OOM_OVER_TOKENS=16 (injected c10::OutOfMemoryError, no real device)"
    else:
        total = total_memory_bytes()
        res["total_memory_bytes"] = total
        fraction = None
        if a.fraction == "auto":
            s = Server(a, {}, "calibrate")
            try:
                if not s.wait_ready(a.ready_timeout):
                    res["problems"].append("calibration server never became ready: " + s.tail())
                    return finish(False)
                res["calibration_warm_ok"] = all(warm(s, a.small))
                reserved = s.metric("writeup_device_memory_reserved_bytes")
                res["calibration_reserved_bytes"] = reserved
                res["calibration_allocated_bytes"] = s.metric("writeup_device_memory_allocated_bytes")
            finally:
                s.stop()
            if reserved and total:
                fraction = (reserved + a.headroom_mb * 2**20) / total
                res["fraction_from"] = f"(reserved {reserved / 2**20:.0f} MiB + headroom {a.headroom_mb:g} MiB) / total"
            else:
                fraction = 0.05
                res["problems"].append("writeup_device_memory_reserved_bytes is 0 or absent (or no nvidia-smi): "
                                       "fell back to a fixed fraction of 0.05")
        else:
            fraction = float(a.fraction)
            res["fraction_from"] = "--fraction"
        res["fraction"] = round(fraction, 6)
        env["WRITEUP_CUDA_MEMORY_FRACTION"] = f"{fraction:.6f}"
        res["how"] = f"WRITEUP_CUDA_MEMORY_FRACTION={fraction:.6f} (caching allocator setMemoryFraction)"

    s = Server(a, env, "run")
    try:
        if not s.wait_ready(a.ready_timeout):
            res["problems"].append("server never became ready with the limit: " + s.tail())
            s.stop()
            return finish(False)
        res["warm_ok"] = warm(s, a.small)
        if not all(res["warm_ok"]):
            res["problems"].append("small requests failed before the big one: raise --headroom-mb")
        oom0 = s.metric("writeup_oom_total") or 0.0
        res["reserved_before_bytes"] = s.metric("writeup_device_memory_reserved_bytes")

        not_ready = []
        stop_poll = threading.Event()

        def poll():
            while not stop_poll.is_set():
                st = http("GET", s.url + "/ready", timeout=5)[0]
                if st != 200:
                    not_ready.append({"t": round(time.time(), 2), "status": st})
                stop_poll.wait(0.1)

        poller = threading.Thread(target=poll)
        poller.start()
        n_prompt = a.prompt_tokens if a.mode == "real" else 40
        big = {"model": "m", "prompt": "the" + " the" * (n_prompt - 1), "max_tokens": 32, "n": a.big_n,
               "temperature": 0.7, "seed": 1}
        if a.mode == "simulated":
            big["n"] = min(a.big_n, 2)
        big_result = [None]

        def send_big():
            big_result[0] = run_concurrently(s.url, [big], 240)[0]

        bt = threading.Thread(target=send_big)
        bt.start()
        time.sleep(0.3)
        small = run_concurrently(s.url, [small_body(10 + i) for i in range(a.small)], 240)
        bt.join(250)
        after = run_concurrently(s.url, [small_body(99)], 120)[0]
        stop_poll.set()
        poller.join()
        ready_after = http("GET", s.url + "/ready", timeout=10)[0]
        oom1 = s.metric("writeup_oom_total") or 0.0
        res["reserved_after_bytes"] = s.metric("writeup_device_memory_reserved_bytes")
        alive = s.proc.poll() is None
        b = big_result[0] or {"status": None}
        res["big"] = {"n": big["n"], "prompt_tokens": n_prompt, "status": b.get("status"),
                      "seconds": b.get("seconds"),
                      "error_code": (b.get("body") or {}).get("error", {}).get("code") if isinstance(b.get("body"), dict) else None}
        res["small"] = [{"status": r["status"] if r else None, "ok": small_ok(r), "seconds": r["seconds"] if r else None}
                        for r in small]
        res["small_after_ok"] = small_ok(after)
        res["ready_not_200_during"] = not_ready[:20]
        res["ready_after"] = ready_after
        res["oom_total_delta"] = oom1 - oom0
        res["server_alive"] = alive
    finally:
        s.stop()
    res["server_log_tail"] = s.tail(15)
    if not all(x["ok"] for x in res["small"]) or not res["small_after_ok"]:
        res["problems"].append("a small request did not complete")
    if res["ready_not_200_during"] or res["ready_after"] != 200:
        res["problems"].append("/ready answered something other than 200")
    if res["oom_total_delta"] < 1:
        res["problems"].append("no OOM was provoked (writeup_oom_total did not go up): is "
                               "WRITEUP_CUDA_MEMORY_FRACTION implemented? lower --headroom-mb / --fraction")
    if not res["server_alive"]:
        res["problems"].append("the server exited")
    return finish(not res["problems"])


if __name__ == "__main__":
    sys.exit(main())

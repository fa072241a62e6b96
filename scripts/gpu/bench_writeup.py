#!/usr/bin/env python3
"""The writeup side of the gpu-check benchmarks (standard library only): runs writeup-bench
decode and engine (one process per concurrency level, so that a slow level cannot lose the
others) and writes one JSON with the figures results.py compares against HF.

  bench_writeup.py --bench BIN --generate BIN --model DIR --device cuda:0 --dtype float16
                   [--tokens 128] [--runs 3] [--concurrency 1,64] [--sequences 7]
                   [--prompt-tokens 32] [--timeout 150] --out FILE

Flags this relies on in writeup-bench (probed; a missing one is reported, not guessed):
  decode/engine --device D --dtype T    (required when --device is not cpu)
  engine --n N                          sequences per request; the engine's JSON line should
                                        carry "sequences_per_request" to show it honoured it
  engine --prompt-tokens N              a prompt of exactly N tokens (for time to first token);
                                        without it, TTFT falls back to writeup-generate --timing
                                        (first_token_ms of a cold process)
"""
import argparse
import json
import subprocess
import sys
import time

PROMPT32 = "the" + " the" * 31  # 32 tokens: [1169] + [262] * 31


def supports(binary, mode, flag):
    """True unless the tool rejects --flag as unknown (it is asked without --model, so it stops
    right after parsing)."""
    try:
        p = subprocess.run([binary, mode, f"--{flag}", "1"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return f"unknown option --{flag}" not in (p.stderr + p.stdout)


def run_json(cmd, kind, timeout):
    """Runs cmd; returns (list of its JSON lines with "bench" == kind, error or None, seconds)."""
    t = time.time()
    print("+ " + " ".join(cmd), flush=True)
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as e:
        out = e.stdout.decode() if isinstance(e.stdout, bytes) else (e.stdout or "")
        print(out, flush=True)
        return [], f"timed out after {timeout:.0f} s", time.time() - t
    print(p.stdout + p.stderr[-2000:], flush=True)
    rows = []
    for line in p.stdout.splitlines():
        line = line.strip()
        if line.startswith("{"):
            try:
                j = json.loads(line)
            except ValueError:
                continue
            if j.get("bench") == kind:
                rows.append(j)
    if p.returncode != 0:
        return rows, f"exit {p.returncode}: {p.stderr.strip()[-300:]}", time.time() - t
    if not rows:
        return rows, "no JSON result line", time.time() - t
    return rows, None, time.time() - t


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bench", required=True)
    ap.add_argument("--generate", required=True)
    ap.add_argument("--model", required=True)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", default="auto")
    ap.add_argument("--tokens", type=int, default=128)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--concurrency", default="1,64")
    ap.add_argument("--sequences", type=int, default=7)
    ap.add_argument("--prompt-tokens", type=int, default=32)
    ap.add_argument("--timeout", type=float, default=150)
    ap.add_argument("--ttft-runs", type=int, default=3)
    ap.add_argument("--budget", type=float, default=330, help="seconds for everything; each command gets "
                    "min(--timeout, what is left)")
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    deadline = time.time() + a.budget

    def tmo():
        return max(5.0, min(a.timeout, deadline - time.time() - 5))

    def save():  # after every stage: a run killed from outside still leaves what it measured
        res["summary"] = (f"incomplete (killed?): single stream {res.get('single_stream_tokens_per_s')} tok/s; "
                          f"problems: {'; '.join(res['errors'])[:300]}")
        json.dump(res, open(a.out, "w"), indent=2)

    res = {"model": a.model, "device": a.device, "dtype": a.dtype, "new_tokens": a.tokens, "runs": a.runs,
           "errors": [], "assumed_flags": {}}
    has = {f: supports(a.bench, "engine", f) for f in ("device", "prompt-tokens")}
    has["dtype"] = has["device"]  # added together
    res["assumed_flags"] = {f"writeup-bench --{k}": v for k, v in has.items()}
    dev = []
    if has["device"] and has["dtype"]:
        dev = ["--device", a.device, "--dtype", a.dtype]
    elif a.device != "cpu":
        res["errors"].append("writeup-bench has no --device/--dtype: cannot benchmark on " + a.device)
        json.dump(res, open(a.out, "w"), indent=2)
        print(res["errors"][-1])
        return 1

    # Single stream: decode bench.
    rows, err, secs = run_json([a.bench, "decode", "--model", a.model, "--tokens", str(a.tokens),
                                "--runs", str(a.runs)] + dev, "decode", tmo())
    if err:
        res["errors"].append(f"decode: {err}")
    if rows:
        d = rows[-1]
        res["decode"] = d
        res["single_stream_tokens_per_s"] = d.get("tokens_per_s")
        res["single_stream_tokens_per_s_note"] = (
            f"writeup-bench decode, median of {a.runs}, decode steps only (prefill excluded); "
            f"median step {d.get('median_step_ms')} ms")

    # Engine: one process per level; level 1 single-sequence (TTFT), others --n sequences each.
    res["engine"] = []
    for c in [int(x) for x in a.concurrency.split(",") if x]:
        n = 1 if c == 1 else a.sequences
        cmd = [a.bench, "engine", "--model", a.model, "--concurrency", str(c), "--tokens", str(a.tokens),
               "--runs", str(a.runs), "--n", str(n)] + dev
        if has["prompt-tokens"]:
            cmd += ["--prompt-tokens", str(a.prompt_tokens)]
        save()
        if deadline - time.time() < 15:
            res["errors"].append(f"engine concurrency {c}: not run (time budget)")
            continue
        rows, err, secs = run_json(cmd, "engine", tmo())
        if err:
            res["errors"].append(f"engine concurrency {c}: {err}")
        for r in rows:
            r["seconds"] = round(secs, 1)
            res["engine"].append(r)
            spr = r.get("sequences_per_request")
            if c == 1:
                if has["prompt-tokens"] and r.get("prompt_tokens", a.prompt_tokens) == a.prompt_tokens:
                    res["ttft_ms"] = r.get("ttft_p50_ms")
                    res["ttft_ms_note"] = (f"writeup-bench engine concurrency 1, {a.prompt_tokens}-token prompt, "
                                           "p50 over warm requests")
            else:
                res["batch_tokens_per_s"] = r.get("tokens_per_s")
                if spr == n or (n == 1 and spr is None):
                    res["batch_tokens_per_s_note"] = (f"writeup-bench engine, {c} concurrent requests x {n} "
                                                      "sequences, continuous batching")
                else:
                    res["batch_tokens_per_s_note"] = (
                        f"writeup-bench engine, {c} concurrent requests; sequences_per_request="
                        f"{spr!r} in its output, so NOT {c} x {n}: the figure is not comparable")
                    res["errors"].append(f"engine concurrency {c}: did not report sequences_per_request={n}")

    # Time to first token, fallback: a cold writeup-generate process.
    save()
    if res.get("ttft_ms") is None:
        cmd = [a.generate, "--model", a.model, "--prompt", PROMPT32, "--max-tokens", "1", "--temperature", "0",
               "--ids", "--timing"] + (["--device", a.device, "--dtype", a.dtype] if dev else [])
        vals = []
        for _ in range(a.ttft_runs):
            try:
                p = subprocess.run(cmd, capture_output=True, text=True, timeout=min(60, tmo()))
            except subprocess.TimeoutExpired:
                break
            for tok in p.stderr.split():
                if tok.startswith("first_token_ms="):
                    vals.append(float(tok.split("=", 1)[1]))
        if vals:
            vals.sort()
            res["ttft_ms"] = vals[len(vals) // 2]
            res["ttft_ms_note"] = ("writeup-generate --timing first_token_ms, 32-token prompt, median of "
                                   f"{a.ttft_runs} COLD processes (writeup-bench engine has no --prompt-tokens)")
        else:
            res["errors"].append("ttft: no first_token_ms from writeup-generate --timing")

    res["summary"] = (f"{a.device} {a.dtype}: single stream {res.get('single_stream_tokens_per_s')} tok/s, "
                      f"batch {res.get('batch_tokens_per_s')} tok/s, TTFT {res.get('ttft_ms')} ms"
                      + (f"; {len(res['errors'])} problem(s): {'; '.join(res['errors'])}" if res["errors"] else ""))
    json.dump(res, open(a.out, "w"), indent=2)
    for k in ("single_stream_tokens_per_s", "batch_tokens_per_s", "ttft_ms"):
        print(f"{k}: {res.get(k)}")
    for e in res["errors"]:
        print("error:", e)
    return 1 if res["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())

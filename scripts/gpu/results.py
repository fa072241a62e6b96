#!/usr/bin/env python3
"""Step records and the final report of scripts/gpu-check.sh (standard library only).

  results.py record OUT NAME STATUS SECONDS SUMMARY [--details FILE] [--log FILE]
                    [--mode M --started ISO]
      writes OUT/steps/NN-NAME.json (NN: the order steps were recorded in); an empty SUMMARY
      takes the details' "summary"; with --mode, also writes the report (one process)
  results.py report OUT [--mode gpu|dry-run] [--started ISO]
      writes OUT/results.json and OUT/results.md from OUT/steps/*.json; exit 1 if a step failed
  results.py get FILE KEY.PATH
      prints one value of a JSON file ('' if absent) - for the shell script
"""
import datetime
import json
import pathlib
import sys

STATUSES = ("passed", "failed", "skipped")

# The bars of issue 7 (gpt2-medium fp16 on an H100/H200).
BARS = {
    "single_stream_tokens_per_s": (">=", 2000.0),
    "batch_tokens_per_s": (">=", 50000.0),
    "ttft_ms": ("<=", 5.0),
}


def load(path):
    try:
        return json.loads(pathlib.Path(path).read_text())
    except (OSError, ValueError):
        return None


def record(out, name, status, seconds, summary, details=None, log=None):
    if status not in STATUSES:
        raise SystemExit(f"results.py: bad status {status!r}")
    steps = pathlib.Path(out) / "steps"
    steps.mkdir(parents=True, exist_ok=True)
    existing = sorted(p for p in steps.glob("*.json") if not p.name.split("-", 1)[1] == f"{name}.json")
    for p in steps.glob(f"*-{name}.json"):
        p.unlink()
    entry = {"name": name, "status": status, "seconds": round(float(seconds), 1), "summary": summary}
    if details:
        d = load(details)
        entry["details"] = d if d is not None else {"unreadable": str(details)}
        if not summary and isinstance(d, dict) and d.get("summary"):
            entry["summary"] = d["summary"]
    if log:
        entry["log"] = str(pathlib.Path(log).relative_to(out)) if pathlib.Path(log).is_relative_to(out) else str(log)
    (steps / f"{len(existing):02d}-{name}.json").write_text(json.dumps(entry, indent=2) + "\n")


def fmt(v, digits=1):
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:,.{digits}f}"
    return str(v)


def benchmarks(steps):
    """The writeup vs HF comparison rows, from the bench_writeup and bench_hf details."""
    w = (steps.get("bench_writeup") or {}).get("details") or {}
    h = (steps.get("bench_hf") or {}).get("details") or {}
    rows = []
    for key, label, unit in (
        ("single_stream_tokens_per_s", "single stream decode, 128 new tokens", "tokens/s"),
        ("batch_tokens_per_s", "64 requests x 7 sequences, 128 new tokens", "tokens/s (aggregate)"),
        ("ttft_ms", "time to first token, 32-token prompt", "ms"),
    ):
        wv, hv = w.get(key), h.get(key)
        op, bar = BARS[key]
        meets = None
        if isinstance(wv, (int, float)):
            meets = wv >= bar if op == ">=" else wv <= bar
        speedup = None
        if isinstance(wv, (int, float)) and isinstance(hv, (int, float)) and wv and hv:
            speedup = wv / hv if op == ">=" else hv / wv
        rows.append({"metric": key, "label": label, "unit": unit, "writeup": wv, "hf": hv,
                     "writeup_vs_hf": round(speedup, 2) if speedup else None,
                     "bar": f"{op} {bar:g}", "meets_bar": meets,
                     "writeup_note": w.get(key + "_note"), "hf_note": h.get(key + "_note")})
    return rows


def report(out, mode, started):
    out = pathlib.Path(out)
    entries = [load(p) for p in sorted((out / "steps").glob("*.json"))]
    entries = [e for e in entries if e]
    by_name = {e["name"]: e for e in entries}
    failed = [e["name"] for e in entries if e["status"] == "failed"]
    env = (by_name.get("env") or {}).get("details") or {}
    result = {
        "mode": mode,
        "started": started,
        "finished": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "ok": not failed,
        "failed": failed,
        "device": env.get("gpu_name") or env.get("device"),
        "steps": entries,
        "benchmarks": benchmarks(by_name),
    }
    (out / "results.json").write_text(json.dumps(result, indent=2) + "\n")

    md = [f"# gpu-check results ({mode})", ""]
    md.append(f"- device: {result['device'] or 'none'}")
    for k in ("torch", "torch_cuda", "transformers", "cxx11_abi", "driver"):
        if env.get(k) is not None:
            md.append(f"- {k}: {env[k]}")
    md.append(f"- started {started}, finished {result['finished']}")
    md.append(f"- overall: **{'PASS' if result['ok'] else 'FAIL'}**" + (f" (failed: {', '.join(failed)})" if failed else ""))
    md += ["", "| step | status | seconds | summary |", "| --- | --- | ---: | --- |"]
    for e in entries:
        summary = str(e.get("summary", "")).replace("|", "\\|").replace("\n", " ")
        md.append(f"| {e['name']} | {e['status']} | {e['seconds']:.1f} | {summary} |")
    md += ["", "## writeup vs Hugging Face transformers", "",
           "| metric | writeup | HF transformers | writeup/HF | bar | meets bar |",
           "| --- | ---: | ---: | ---: | --- | --- |"]
    for r in result["benchmarks"]:
        meets = {True: "yes", False: "no", None: "-"}[r["meets_bar"]]
        md.append(f"| {r['label']} ({r['unit']}) | {fmt(r['writeup'])} | {fmt(r['hf'])} | "
                  f"{fmt(r['writeup_vs_hf'], 2)}x | {r['bar']} | {meets} |")
    notes = [f"- {r['metric']} (writeup): {r['writeup_note']}" for r in result["benchmarks"] if r["writeup_note"]]
    notes += [f"- {r['metric']} (HF): {r['hf_note']}" for r in result["benchmarks"] if r["hf_note"]]
    if notes:
        md += ["", "Notes:"] + notes
    (out / "results.md").write_text("\n".join(md) + "\n")
    return 0 if result["ok"] else 1


def get(path, dotted):
    v = load(path)
    for k in dotted.split("."):
        v = v.get(k) if isinstance(v, dict) else None
    print("" if v is None else (json.dumps(v) if isinstance(v, (dict, list)) else v))
    return 0


def main(argv):
    if len(argv) >= 7 and argv[1] == "record":
        opts = dict(zip(argv[7::2], argv[8::2]))
        record(argv[2], argv[3], argv[4], argv[5], argv[6], opts.get("--details"), opts.get("--log"))
        if "--mode" in opts:
            report(argv[2], opts["--mode"], opts.get("--started", ""))
        return 0
    if len(argv) >= 3 and argv[1] == "report":
        opts = dict(zip(argv[3::2], argv[4::2]))
        return report(argv[2], opts.get("--mode", "gpu"), opts.get("--started", ""))
    if len(argv) == 4 and argv[1] == "get":
        return get(argv[2], argv[3])
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))

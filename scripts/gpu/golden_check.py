#!/usr/bin/env python3
"""Greedy continuations and prompt logits of the golden fixtures (tests/data/golden.json,
tests/data/golden_logits.safetensors) by writeup-generate on a device (standard library only).

  golden_check.py --generate BIN --model DIR --golden FILE --device D --dtype T --out FILE
                  [--golden-logits FILE] [--logits-tol X]

For every case with a text: one `writeup-generate --temperature 0 --ids --dump-logits F` run
(same --device / --dtype) gives both the greedy continuation, compared token for token with
`greedy_new_ids`, and the prompt's logits [T, V], whose last rows are compared with
`<case>.logits` of golden_logits.safetensors ([4, V], [1, V] for a 1-token prompt): the max
|difference| must be <= --logits-tol. Default tolerance: 1e-4 for float32 on cpu (what CPU
float32 achieves), 2e-2 otherwise (CUDA float16 / bfloat16 / auto). The golden logits default to
golden_logits.safetensors next to --golden.

Cases with ids but no text (`full`) are skipped: writeup-generate takes a text prompt, not ids.
When writeup-generate has no --dump-logits the logits are not compared (and the run fails
unless --no-logits says that is expected).
Exit 0 when every case run is identical and within the tolerance.
"""
import argparse
import json
import math
import os
import struct
import subprocess
import sys
import tempfile
import time
from array import array

# ------------------------------------------------------------------ safetensors (stdlib only)
_DTYPES = {"F32": ("f", 4), "F16": ("e", 2), "BF16": (None, 2), "F64": ("d", 8)}


def read_safetensors_header(path):
    """(header dict without __metadata__, offset of the data section)."""
    with open(path, "rb") as f:
        raw = f.read(8)
        if len(raw) != 8:
            raise ValueError(f"{path}: not a safetensors file (shorter than 8 bytes)")
        (n,) = struct.unpack("<Q", raw)
        if n > 100 * 1024 * 1024:
            raise ValueError(f"{path}: header length {n} is implausible")
        header = json.loads(f.read(n).decode("utf-8"))
    header.pop("__metadata__", None)
    return header, 8 + n


def read_tensor(path, name, last_rows=None):
    """Tensor `name` of a safetensors file as (shape, array('f') of its values, row-major).
    last_rows=K keeps only the last K rows of the first dimension (read from disk, nothing else)."""
    header, base = read_safetensors_header(path)
    if name not in header:
        raise KeyError(f"{path}: no tensor {name!r} (has {sorted(header)})")
    info = header[name]
    dtype, shape = info["dtype"], list(info["shape"])
    begin, end = info["data_offsets"]
    if dtype not in _DTYPES:
        raise ValueError(f"{path}:{name}: dtype {dtype} not supported")
    code, size = _DTYPES[dtype]
    count = 1
    for d in shape:
        count *= d
    if end - begin != count * size:
        raise ValueError(f"{path}:{name}: {end - begin} bytes for shape {shape} {dtype}")
    if last_rows is not None and shape:
        rows = min(last_rows, shape[0])
        row_bytes = (count // shape[0] if shape[0] else 0) * size
        begin = end - rows * row_bytes
        shape[0] = rows
        count = rows * (row_bytes // size)
    with open(path, "rb") as f:
        f.seek(base + begin)
        raw = f.read(end - begin)
    if len(raw) != end - begin:
        raise ValueError(f"{path}:{name}: file truncated")
    if dtype == "F32" and sys.byteorder == "little":
        out = array("f")
        out.frombytes(raw)
    elif dtype == "BF16":
        # bfloat16 is the top half of a float32.
        halves = memoryview(raw).cast("H")
        out = array("f", (struct.unpack("<f", struct.pack("<I", h << 16))[0] for h in halves))
    else:
        out = array("f", struct.unpack(f"<{count}{code}", raw))
    return shape, out


def max_abs_diff(a, b):
    """max |a - b| over two equal-length sequences; inf if either holds a NaN or inf."""
    if len(a) != len(b):
        raise ValueError(f"length {len(a)} vs {len(b)}")
    m = 0.0
    for x, y in zip(a, b):
        d = abs(x - y)
        if d > m:
            m = d
        elif d != d:  # NaN
            return math.inf
    return m


def max_abs(a):
    m = 0.0
    for x in a:
        if abs(x) > m:
            m = abs(x)
        elif x != x:
            return math.inf
    return m


def row_argmax(values, cols):
    out = []
    for r in range(len(values) // cols):
        row = values[r * cols:(r + 1) * cols]
        out.append(max(range(cols), key=row.__getitem__))
    return out


# ------------------------------------------------------------------------------------ check
def default_tol(device, dtype):
    return 1e-4 if (dtype == "float32" and device == "cpu") else 2e-2


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--generate", required=True)
    ap.add_argument("--model", required=True)
    ap.add_argument("--golden", required=True)
    ap.add_argument("--golden-logits", help="default: golden_logits.safetensors next to --golden")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", default="float32")
    ap.add_argument("--logits-tol", type=float, default=None,
                    help="max |logit difference| allowed (default 1e-4 for cpu float32, else 2e-2)")
    ap.add_argument("--no-logits", action="store_true", help="do not compare logits")
    ap.add_argument("--no-device-flags", action="store_true", help="the tool has no --device/--dtype")
    ap.add_argument("--out", required=True)
    ap.add_argument("--timeout", type=float, default=60)
    a = ap.parse_args()

    golden = json.load(open(a.golden))
    glogits = a.golden_logits or os.path.join(os.path.dirname(os.path.abspath(a.golden)),
                                              "golden_logits.safetensors")
    tol = a.logits_tol if a.logits_tol is not None else default_tol(a.device, a.dtype)
    # Probe the tool for --dump-logits.
    compare_logits, logits_why = not a.no_logits, None
    if compare_logits:
        try:
            h = subprocess.run([a.generate, "--help"], capture_output=True, text=True, timeout=30)
            if "--dump-logits" not in h.stdout + h.stderr:
                compare_logits, logits_why = False, "writeup-generate has no --dump-logits"
        except (OSError, subprocess.TimeoutExpired) as e:
            compare_logits, logits_why = False, f"writeup-generate --help failed: {e}"
        if compare_logits and not os.path.isfile(glogits):
            compare_logits, logits_why = False, f"no golden logits file {glogits}"
    elif a.no_logits:
        logits_why = "--no-logits"

    tmp = tempfile.mkdtemp(prefix="golden-logits-")
    cases, ok = [], True
    for c in golden["cases"]:
        if "text" not in c:
            why = ("ids but no text: writeup-generate takes a text prompt, not ids" if "ids" in c
                   else "no text")
            cases.append({"name": c["name"], "status": "skipped", "why": why})
            continue
        if "greedy_new_ids" not in c:
            cases.append({"name": c["name"], "status": "skipped", "why": "no greedy continuation"})
            continue
        want = c["greedy_new_ids"]
        dump = os.path.join(tmp, f"{c['name']}.safetensors")
        cmd = [a.generate, "--model", a.model, "--prompt", c["text"], "--max-tokens", str(len(want)),
               "--temperature", "0", "--ids"]
        if not a.no_device_flags:
            cmd += ["--device", a.device, "--dtype", a.dtype]
        if compare_logits:
            cmd += ["--dump-logits", dump]
        t = time.time()
        try:
            p = subprocess.run(cmd, capture_output=True, text=True, timeout=a.timeout)
        except subprocess.TimeoutExpired:
            cases.append({"name": c["name"], "status": "failed", "why": f"timed out after {a.timeout:.0f} s"})
            ok = False
            continue
        entry = {"name": c["name"], "seconds": round(time.time() - t, 2), "want": want}
        whys = []
        if p.returncode != 0:
            entry.update(status="failed", why=f"exit {p.returncode}: {p.stderr.strip()[-400:]}")
            ok = False
            cases.append(entry)
            continue
        try:
            got = [int(x) for x in p.stdout.split()]
        except ValueError:
            got = None
        entry["got"] = got
        entry["greedy_identical"] = got == want
        if got != want:
            first = next((i for i, (x, y) in enumerate(zip(got or [], want)) if x != y),
                         min(len(got or []), len(want)))
            entry["first_difference"] = first
            whys.append(f"greedy ids differ from token {first}")
        if compare_logits:
            try:
                gshape, gvals = read_tensor(glogits, f"{c['name']}.logits")
                wshape, wvals = read_tensor(dump, "logits", last_rows=gshape[0])
                entry["logits_rows_compared"] = gshape[0]
                if len(wshape) != 2 or wshape[1] != gshape[1] or wshape[0] != gshape[0]:
                    raise ValueError(f"writeup's logits have shape {wshape} (last rows), golden {gshape}")
                if "ids" in c:
                    full_shape = read_safetensors_header(dump)[0]["logits"]["shape"]
                    if full_shape[0] != len(c["ids"]):
                        whys.append(f"writeup's logits have {full_shape[0]} positions, the prompt has "
                                    f"{len(c['ids'])} tokens")
                d = max_abs_diff(wvals, gvals)
                entry["logits_max_abs_diff"] = d if math.isfinite(d) else "inf/nan"
                entry["logits_argmax_equal"] = row_argmax(wvals, gshape[1]) == row_argmax(gvals, gshape[1])
                if not d <= tol:
                    whys.append(f"logits max |diff| {d:.3g} > {tol:g}")
            except (OSError, ValueError, KeyError) as e:
                entry["logits_max_abs_diff"] = None
                whys.append(f"logits: {e}")
        if whys:
            ok = False
            entry.update(status="failed", why="; ".join(whys))
        else:
            entry["status"] = "passed"
        cases.append(entry)
    for f in os.listdir(tmp):
        os.unlink(os.path.join(tmp, f))
    os.rmdir(tmp)

    ran = [c for c in cases if c["status"] != "skipped"]
    passed = [c for c in ran if c["status"] == "passed"]
    identical = [c for c in ran if c.get("greedy_identical")]
    diffs = {c["name"]: c.get("logits_max_abs_diff") for c in ran}
    skipped = [f"{c['name']} ({c['why']})" for c in cases if c["status"] == "skipped"]
    if compare_logits:
        within = [c for c in ran if isinstance(c.get("logits_max_abs_diff"), float)
                  and c["logits_max_abs_diff"] <= tol]
        worst = [v for v in diffs.values() if isinstance(v, float)]
        logits_summary = (f"logits within {tol:g} {len(within)}/{len(ran)} (max |diff| "
                          + ", ".join(f"{k} {v:.3g}" if isinstance(v, float) else f"{k} {v}"
                                      for k, v in diffs.items()) + ")")
    else:
        within, worst = [], []
        logits_summary = f"logits not compared: {logits_why}"
        if not a.no_logits:
            ok = False  # the check needs them: only --no-logits makes their absence acceptable
    device = a.device if not a.no_device_flags else "default (tool has no --device)"
    dtype = a.dtype if not a.no_device_flags else "default"
    result = {
        "device": device,
        "dtype": dtype,
        "greedy_identical": f"{len(identical)}/{len(ran)}",
        "logits": {
            "compared": compare_logits,
            "why_not": logits_why,
            "golden_file": glogits,
            "tolerance": tol,
            "within_tolerance": f"{len(within)}/{len(ran)}" if compare_logits else None,
            "max_abs_diff": diffs if compare_logits else None,
            "worst_max_abs_diff": max(worst) if worst else None,
            "rows": "the last 4 prompt positions (1 for a 1-token prompt), float32 golden from HF on CPU",
        },
        "skipped": skipped,
        "cases": cases,
        "summary": (f"greedy identical {len(identical)}/{len(ran)} on {device} {dtype}; {logits_summary}"
                    + (f"; skipped: {', '.join(skipped)}" if skipped else "")),
    }
    json.dump(result, open(a.out, "w"), indent=2)
    print(result["summary"])
    for c in cases:
        extra = ""
        if isinstance(c.get("logits_max_abs_diff"), float):
            extra = f" logits max |diff| {c['logits_max_abs_diff']:.3g}"
        print(f"  {c['name']}: {c['status']}{extra}" + (f" ({c['why']})" if c.get("why") else ""))
    return 0 if ok and ran else 1


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""The PyTorch / Hugging Face transformers side of scripts/gpu-check.sh (runs on the GPU machine).

  hf_check.py env --out FILE [--dry-run]
      torch / CUDA / transformers versions, the GPU and driver, torch's C++ ABI and CMake
      prefix, the tools on PATH; works without torch too (then it says so); exit 1 (not in a
      dry run) when there is no GPU or no transformers
  hf_check.py greedy --model DIR --prompt TEXT --tokens 64 --writeup-ids "1 2 3" --out FILE
                     [--generate BIN] [--device cuda:0] [--dtype float16] [--writeup-logits FILE]
                     [--logits-rtol 1e-2] [--no-logits]
      HF GPT2LMHeadModel (float16 on cuda:0) greedy `generate`, compared with writeup's ids.
      Reports the HF top-1/top-2 logit margin at each step, so that a difference at a near tie
      can be told from a real one. Also the prompt's logits: `writeup-generate --dump-logits`
      (--device/--dtype as given; or a dump given with --writeup-logits) against HF's fp16
      forward on the same prompt, at every position: relative error max|a-b| / max|b| (b = HF)
      must be <= --logits-rtol. writeup-generate: --generate, else $WRITEUP_GENERATE, else
      $WRITEUP_BUILD_DIR/writeup-generate, else build-gpu/ then build/ of this checkout.
      Exit 0 when the ids are identical and the logits within the tolerance.
  hf_check.py bench --model DIR --tokens 128 --runs 3 --requests 64 --sequences 7 --out FILE
      HF `generate` (fp16, greedy, every sequence forced to the full length with
      min_new_tokens, one warm-up first, median of --runs):
        single_stream_tokens_per_s  one sequence, 32-token prompt, new tokens / wall time of
                                    the whole generate call (prefill included)
        batch_tokens_per_s          --requests prompts of 32 tokens each repeated --sequences
                                    times, run as ONE batch (64 x 7 = 448 rows), rows x new
                                    tokens / wall time (HF has no continuous batching: this
                                    is its best case)
        ttft_ms                     generate(max_new_tokens=1) on the 32-token prompt,
                                    median of 10 after warm-up
The model is loaded with from_pretrained(DIR) and converted with .to("cuda", torch.float16):
the same values as torch_dtype=float16 for a float16 checkpoint, on every transformers version.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))

EOS = 50256
PROMPT32 = [1169] + [262] * 31  # "the the the ..." : 32 tokens in the GPT-2 vocabulary


def cmd_env(a):
    import shutil
    import subprocess
    info = {"python": sys.version.split()[0]}
    info["tools"] = {t: shutil.which(t) for t in ("cmake", "ninja", "nvcc", "pkg-config", "redis-server", "node",
                                                  "nvidia-smi")}
    if not a.dry_run and shutil.which("nvidia-smi"):
        q = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                           capture_output=True, text=True)
        info["driver"] = (q.stdout.strip().splitlines() or [None])[0]
    try:
        import torch
    except Exception as e:  # noqa: BLE001 - report whatever went wrong
        torch = None
        info["torch"] = None
        info["torch_error"] = f"{type(e).__name__}: {e}"
    if torch is not None:
        info.update(
            torch=torch.__version__,
            torch_cuda=torch.version.cuda,
            cudnn=torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
            cxx11_abi=bool(torch._C._GLIBCXX_USE_CXX11_ABI),
            cmake_prefix_path=torch.utils.cmake_prefix_path,
            cuda_available=torch.cuda.is_available(),
        )
        if torch.cuda.is_available() and not a.dry_run:
            p = torch.cuda.get_device_properties(0)
            info.update(gpu_name=p.name, gpu_capability=f"{p.major}.{p.minor}",
                        gpu_total_memory_bytes=p.total_memory, gpu_count=torch.cuda.device_count())
        try:
            import transformers
            info["transformers"] = transformers.__version__
        except Exception as e:  # noqa: BLE001
            info["transformers"] = None
            info["transformers_error"] = f"{type(e).__name__}: {e}"
    info["device"] = "cpu (dry run)" if a.dry_run else info.get("gpu_name")
    if a.dry_run:
        info["summary"] = f"dry run; python torch: {info['torch'] or 'none'}"
        ok = True
    else:
        info["summary"] = (f"{info.get('gpu_name') or 'NO GPU'}, driver {info.get('driver')}; torch {info['torch']} "
                           f"(CUDA {info.get('torch_cuda')}), cxx11 ABI {info.get('cxx11_abi')}; "
                           f"transformers {info.get('transformers')}")
        ok = bool(info.get("gpu_name")) and bool(info.get("transformers"))
    json.dump(info, open(a.out, "w"), indent=2)
    print(json.dumps(info, indent=2))
    return 0 if ok else 1


def load_model(path):
    import torch
    from transformers import GPT2LMHeadModel
    model = GPT2LMHeadModel.from_pretrained(path)
    model = model.to(device="cuda", dtype=torch.float16).eval()
    return model


def generate(model, ids, new_tokens, force_length, **kw):
    import torch
    x = torch.tensor(ids, device="cuda")
    if x.dim() == 1:
        x = x[None]
    args = dict(attention_mask=torch.ones_like(x), max_new_tokens=new_tokens, do_sample=False,
                pad_token_id=EOS, num_beams=1)
    if force_length:
        args["min_new_tokens"] = new_tokens
    args.update(kw)
    with torch.inference_mode():
        return model.generate(x, **args)


def find_generate(explicit):
    if explicit:
        return explicit
    if os.environ.get("WRITEUP_GENERATE"):
        return os.environ["WRITEUP_GENERATE"]
    dirs = [os.environ["WRITEUP_BUILD_DIR"]] if os.environ.get("WRITEUP_BUILD_DIR") else []
    dirs += [os.path.join(ROOT, "build-gpu"), os.path.join(ROOT, "build")]
    for d in dirs:
        p = os.path.join(d, "writeup-generate")
        if os.access(p, os.X_OK):
            return p
    return None


def writeup_prompt_logits(a, tmpdir):
    """writeup's prompt logits [T, V] as a float32 torch tensor (CPU), and how they were got."""
    import torch
    sys.path.insert(0, HERE)
    from golden_check import read_tensor  # the standard-library safetensors reader
    path, how = a.writeup_logits, {"source": a.writeup_logits}
    if not path:
        gen = find_generate(a.generate)
        if not gen:
            raise RuntimeError("no writeup-generate found (give --generate BIN)")
        path = os.path.join(tmpdir, "writeup-logits.safetensors")
        cmd = [gen, "--model", a.model, "--prompt", a.prompt, "--max-tokens", "1", "--temperature", "0",
               "--ids", "--device", a.device, "--dtype", a.dtype, "--dump-logits", path]
        how = {"command": cmd}
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=a.timeout)
        if p.returncode != 0:
            raise RuntimeError(f"writeup-generate --dump-logits: exit {p.returncode}: {p.stderr.strip()[-400:]}")
    shape, values = read_tensor(path, "logits")
    if len(shape) != 2:
        raise RuntimeError(f"writeup's logits have shape {shape}, expected [T, V]")
    t = torch.frombuffer(bytearray(values.tobytes()), dtype=torch.float32).reshape(shape)
    return t, how


def compare_logits(a, model, ids):
    """writeup's prompt logits vs HF fp16 forward on the same ids: relative error max|a-b|/max|b|."""
    import torch
    res = {"rtol": a.logits_rtol, "device": a.device, "dtype": a.dtype}
    with tempfile.TemporaryDirectory(prefix="hf-check-") as tmp:
        try:
            mine, how = writeup_prompt_logits(a, tmp)
        except Exception as e:  # noqa: BLE001 - report whatever went wrong
            res.update(ok=False, why=f"{type(e).__name__}: {e}")
            return res
    res.update(how)
    with torch.inference_mode():
        hf = model(torch.tensor([ids], device="cuda")).logits[0].float().cpu()
    res["hf_shape"], res["writeup_shape"] = list(hf.shape), list(mine.shape)
    if mine.shape != hf.shape:
        res.update(ok=False, why=f"writeup's logits have shape {list(mine.shape)}, HF's {list(hf.shape)} "
                                 "(different tokenization or vocabulary?)")
        return res
    diff = (mine - hf).abs()
    if not torch.isfinite(mine).all():
        res.update(ok=False, why="writeup's logits hold NaN or inf")
        return res
    scale = float(hf.abs().max())
    max_diff = float(diff.max())
    rel = max_diff / scale if scale > 0 else float("inf")
    row_rel = (diff.max(dim=1).values / hf.abs().max(dim=1).values.clamp_min(1e-30)).tolist()
    res.update(
        max_abs_diff=max_diff, max_abs_hf=scale, relative_error=rel,
        relative_error_per_position=[round(x, 6) for x in row_rel],
        argmax_equal_per_position=(mine.argmax(dim=1) == hf.argmax(dim=1)).tolist(),
        ok=rel <= a.logits_rtol,
    )
    if not res["ok"]:
        res["why"] = f"relative error {rel:.3g} > {a.logits_rtol:g}"
    return res


def cmd_greedy(a):
    import torch
    from transformers import AutoTokenizer
    t0 = time.time()
    model = load_model(a.model)
    tok = AutoTokenizer.from_pretrained(a.model)
    ids = tok(a.prompt)["input_ids"]
    if a.no_logits:
        logits = {"ok": True, "compared": False, "why": "--no-logits"}
    else:
        logits = compare_logits(a, model, ids)
        logits["compared"] = "relative_error" in logits
    out = generate(model, ids, a.tokens, False, output_scores=True, return_dict_in_generate=True)
    new = out.sequences[0, len(ids):].tolist()
    margins = []
    for s in out.scores:
        top = torch.topk(s[0].float(), 2).values
        margins.append(round(float(top[0] - top[1]), 5))
    # writeup stops at <|endoftext|> like HF; compare up to (not including) the first EOS.
    def cut(v):
        return v[: v.index(EOS)] if EOS in v else v
    theirs = [int(x) for x in a.writeup_ids.split()]
    hf, wu = cut(new), cut(theirs)
    first = next((i for i, (x, y) in enumerate(zip(hf, wu)) if x != y), None)
    if first is None and len(hf) != len(wu):
        first = min(len(hf), len(wu))
    result = {
        "prompt": a.prompt, "prompt_ids": ids, "new_tokens": a.tokens,
        "hf_ids": new, "writeup_ids": theirs, "identical": first is None,
        "first_difference": first,
        "hf_margin_at_difference": margins[first] if first is not None and first < len(margins) else None,
        "hf_min_margin": min(margins) if margins else None,
        "hf_margins": margins,
        "attn_implementation": getattr(model.config, "_attn_implementation", None),
        "seconds": round(time.time() - t0, 2),
        "logits": logits,
    }
    greedy = (f"{a.tokens} greedy tokens: identical to HF transformers fp16"
              if first is None else
              f"{a.tokens} greedy tokens: differ from HF fp16 at token {first} (HF top-2 margin there "
              f"{result['hf_margin_at_difference']}, smallest margin {result['hf_min_margin']})")
    if logits.get("compared"):
        lsum = (f"prompt logits ({len(ids)} positions) relative error {logits['relative_error']:.3g} "
                f"{'<=' if logits['ok'] else '>'} {a.logits_rtol:g} (max |diff| {logits['max_abs_diff']:.3g}, "
                f"max |HF| {logits['max_abs_hf']:.3g})")
    else:
        lsum = f"prompt logits not compared: {logits.get('why')}"
    result["logits_ok"] = bool(logits.get("ok"))
    result["summary"] = f"{greedy}; {lsum}"
    json.dump(result, open(a.out, "w"), indent=2)
    print(f"identical={result['identical']} first_difference={first} "
          f"margin_there={result['hf_margin_at_difference']} min_margin={result['hf_min_margin']}")
    print(lsum)
    return 0 if result["identical"] and result["logits_ok"] else 1


def timed(fn, runs):
    import torch
    times = []
    for _ in range(runs):
        torch.cuda.synchronize()
        t = time.perf_counter()
        fn()
        torch.cuda.synchronize()
        times.append(time.perf_counter() - t)
    return statistics.median(times), times


def cmd_bench(a):
    import random

    import torch
    result = {"model": a.model, "dtype": "float16", "new_tokens": a.tokens, "runs": a.runs}
    t0 = time.time()
    model = load_model(a.model)
    result["load_seconds"] = round(time.time() - t0, 2)
    result["attn_implementation"] = getattr(model.config, "_attn_implementation", None)

    # Single stream.
    generate(model, PROMPT32, a.tokens, True)  # warm-up
    med, times = timed(lambda: generate(model, PROMPT32, a.tokens, True), a.runs)
    result["single_stream_tokens_per_s"] = round(a.tokens / med, 1)
    result["single_stream_seconds"] = [round(t, 4) for t in times]
    result["single_stream_tokens_per_s_note"] = "HF generate, 32-token prompt, wall time incl. prefill"
    print(f"single stream: {result['single_stream_tokens_per_s']} tokens/s", flush=True)

    # Time to first token.
    generate(model, PROMPT32, 1, True)
    med, times = timed(lambda: generate(model, PROMPT32, 1, True), 10)
    result["ttft_ms"] = round(med * 1e3, 2)
    x = torch.tensor([PROMPT32], device="cuda")
    with torch.inference_mode():
        fwd, _ = timed(lambda: model(x), 10)
    result["prefill_forward_ms"] = round(fwd * 1e3, 2)
    result["ttft_ms_note"] = "generate(max_new_tokens=1), 32-token prompt, median of 10"
    print(f"ttft: {result['ttft_ms']} ms (bare forward {result['prefill_forward_ms']} ms)", flush=True)

    # 64 requests x 7 sequences as one batch.
    rng = random.Random(7)
    rows = []
    for _ in range(a.requests):
        p = [rng.randrange(0, EOS) for _ in range(32)]
        rows += [p] * a.sequences
    generate(model, rows, min(8, a.tokens), True)  # warm-up (allocations for the batch)
    med, times = timed(lambda: generate(model, rows, a.tokens, True), a.runs)
    result["batch_rows"] = len(rows)
    result["batch_tokens_per_s"] = round(len(rows) * a.tokens / med, 1)
    result["batch_seconds"] = [round(t, 4) for t in times]
    result["batch_tokens_per_s_note"] = (f"HF generate, ONE batch of {a.requests} prompts x {a.sequences} "
                                         f"= {len(rows)} rows, 32-token prompts")
    result["max_memory_allocated_bytes"] = torch.cuda.max_memory_allocated()
    print(f"batch {len(rows)}: {result['batch_tokens_per_s']} tokens/s", flush=True)
    result["summary"] = (f"HF fp16 generate: single stream {result['single_stream_tokens_per_s']} tok/s, "
                         f"{a.requests}x{a.sequences} as one batch of {len(rows)}: {result['batch_tokens_per_s']} tok/s, "
                         f"TTFT {result['ttft_ms']} ms")
    json.dump(result, open(a.out, "w"), indent=2)
    return 0


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    e = sub.add_parser("env")
    e.add_argument("--out", required=True)
    e.add_argument("--dry-run", action="store_true", help="no GPU expected: report what is there")
    g = sub.add_parser("greedy")
    g.add_argument("--model", required=True)
    g.add_argument("--prompt", required=True)
    g.add_argument("--tokens", type=int, default=64)
    g.add_argument("--writeup-ids", required=True)
    g.add_argument("--out", required=True)
    g.add_argument("--generate", help="writeup-generate for the logits dump (default: see above)")
    g.add_argument("--device", default="cuda:0", help="writeup-generate --device (default cuda:0)")
    g.add_argument("--dtype", default="float16", help="writeup-generate --dtype (default float16)")
    g.add_argument("--writeup-logits", help="writeup's prompt logits already dumped (safetensors, 'logits')")
    g.add_argument("--logits-rtol", type=float, default=1e-2,
                   help="max|writeup - HF| / max|HF| allowed over the prompt's logits (default 1e-2)")
    g.add_argument("--no-logits", action="store_true", help="do not compare the prompt's logits")
    g.add_argument("--timeout", type=float, default=120, help="writeup-generate timeout (s)")
    b = sub.add_parser("bench")
    b.add_argument("--model", required=True)
    b.add_argument("--tokens", type=int, default=128)
    b.add_argument("--runs", type=int, default=3)
    b.add_argument("--requests", type=int, default=64)
    b.add_argument("--sequences", type=int, default=7)
    b.add_argument("--out", required=True)
    a = ap.parse_args()
    return {"env": cmd_env, "greedy": cmd_greedy, "bench": cmd_bench}[a.cmd](a)


if __name__ == "__main__":
    sys.exit(main())

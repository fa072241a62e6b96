#!/usr/bin/env python3
"""The PyTorch / Hugging Face transformers side of scripts/gpu-check.sh (runs on the GPU machine).

  hf_check.py env --out FILE [--dry-run]
      torch / CUDA / transformers versions, the GPU and driver, torch's C++ ABI and CMake
      prefix, the tools on PATH; works without torch too (then it says so); exit 1 (not in a
      dry run) when there is no GPU or no transformers
  hf_check.py greedy --model DIR --prompt TEXT --tokens 64 --writeup-ids "1 2 3" --out FILE
      HF GPT2LMHeadModel (float16 on cuda:0) greedy `generate`, compared with writeup's ids;
      exit 0 when identical. Reports the HF top-1/top-2 logit margin at each step, so that a
      difference at a near tie can be told from a real one.
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
import statistics
import sys
import time

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


def cmd_greedy(a):
    import torch
    from transformers import AutoTokenizer
    t0 = time.time()
    model = load_model(a.model)
    tok = AutoTokenizer.from_pretrained(a.model)
    ids = tok(a.prompt)["input_ids"]
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
        "logits": "not compared: writeup prints no logits (needs a --dump-logits flag for the 1e-2 check)",
    }
    result["summary"] = (f"{a.tokens} greedy tokens: identical to HF transformers fp16 (logits not compared)"
                         if first is None else
                         f"{a.tokens} greedy tokens: differ from HF fp16 at token {first} (HF top-2 margin there "
                         f"{result['hf_margin_at_difference']}, smallest margin {result['hf_min_margin']})")
    json.dump(result, open(a.out, "w"), indent=2)
    print(f"identical={result['identical']} first_difference={first} "
          f"margin_there={result['hf_margin_at_difference']} min_margin={result['hf_min_margin']}")
    return 0 if result["identical"] else 1


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

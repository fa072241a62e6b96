#!/usr/bin/env python3
"""Write a legacy ggml GPT-2 model file (the format read by ggml's examples/gpt-2,
e.g. gpt-2-backend / gpt-2-batched) from either

  (a) a Hugging Face GPT2LMHeadModel / GPT2Model directory (config.json + model.safetensors), or
  (b) random weights for a named shape (small = 124M, medium = 355M).

python3 + numpy only; safetensors is parsed by hand.

File layout (little-endian int32 unless noted), as written by ggml's converters:
  magic 0x67676d6c ('ggml')
  n_vocab, n_ctx, n_embd, n_head, n_layer, ftype (0 = f32, 1 = f16)
  n_vocab again, then per token: len, raw bytes (GPT-2 byte-level BPE decoded to bytes), in id order
  per tensor: n_dims, name_len, ttype (0 f32 / 1 f16), ne[0..n_dims-1] (innermost first), name, data

Tensor rules (what the gpt-2 loader in main-backend.cpp / main-batched.cpp expects; same as
convert-ckpt-to-ggml.py and convert-cerebras-to-ggml.py):
  * names: model/wte, model/wpe, model/ln_f/{g,b}, model/h{i}/{ln_1,ln_2}/{g,b},
    model/h{i}/attn/{c_attn,c_proj}/{w,b}, model/h{i}/mlp/{c_fc,c_proj}/{w,b}, optional model/lm_head
  * the four Conv1D weight matrices (attn.c_attn, attn.c_proj, mlp.c_fc, mlp.c_proj) are stored by HF
    as [in, out]; they are transposed to [out, in] so ggml sees ne = [in, out] (ggml_mul_mat(W, x)).
  * with ftype f16: wte, lm_head and the four /w matrices become f16; wpe, layer-norm g/b and all
    biases stay f32 (the loader allocates wpe as GGML_TYPE_F32).
  * attn.bias / attn.masked_bias buffers are skipped; lm_head.weight is skipped when tied to wte
    (the loader then reuses model/wte as the LM head).

--h5-exact reproduces convert-h5-to-ggml.py literally instead (only mlp.c_proj transposed, every 2-D
'.weight' incl. wpe made f16). The gpt-2 loader rejects such files ("wrong shape"/"wrong size"); the
option exists only to demonstrate that.

Examples:
  python3 scripts/bench/to_ggml.py hf tests/data/tiny-gpt2 /tmp/tiny-f32.bin --ftype f32
  python3 scripts/bench/to_ggml.py random small /tmp/small-f16.bin --ftype f16 --seed 1
"""
import argparse
import json
import os
import re
import struct
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
# GPT-2's vocabulary, for `random` and for model directories without a vocab.json.
DEFAULT_VOCAB = os.path.join(HERE, os.pardir, os.pardir, "tests", "data", "tiny-gpt2", "vocab.json")

SHAPES = {
    # name: (n_layer, n_embd, n_head, n_ctx)
    "small": (12, 768, 12, 1024),
    "medium": (24, 1024, 16, 1024),
    "large": (36, 1280, 20, 1024),
    "xl": (48, 1600, 25, 1024),
}
N_VOCAB = 50257
GGML_MAGIC = 0x67676D6C


# ref: https://github.com/openai/gpt-2/blob/master/src/encoder.py
def bytes_to_unicode():
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(2 ** 8):
        if b not in bs:
            bs.append(b)
            cs.append(2 ** 8 + n)
            n += 1
    return dict(zip(bs, [chr(c) for c in cs]))


# ---------------------------------------------------------------- safetensors
_ST_DTYPES = {"F64": np.float64, "F32": np.float32, "F16": np.float16,
              "I64": np.int64, "I32": np.int32, "I16": np.int16, "I8": np.int8,
              "U8": np.uint8, "BOOL": np.bool_}


def read_safetensors(path):
    """Yield (name, np.ndarray) in file order. Handles F32/F16/BF16/F64/ints."""
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n).decode("utf-8"))
    base = 8 + n
    mm = np.memmap(path, dtype=np.uint8, mode="r")
    items = [(k, v) for k, v in header.items() if k != "__metadata__"]
    items.sort(key=lambda kv: kv[1]["data_offsets"][0])
    for name, info in items:
        b, e = info["data_offsets"]
        raw = mm[base + b: base + e]
        dt = info["dtype"]
        shape = tuple(info["shape"])
        if dt == "BF16":
            arr = (np.frombuffer(raw.tobytes(), dtype="<u2").astype(np.uint32) << 16).view(np.float32)
        else:
            arr = np.frombuffer(raw.tobytes(), dtype=np.dtype(_ST_DTYPES[dt]).newbyteorder("<"))
        yield name, arr.reshape(shape)


def hf_source(model_dir):
    with open(os.path.join(model_dir, "config.json"), "r", encoding="utf-8") as f:
        cfg = json.load(f)
    act = cfg.get("activation_function", "gelu_new")
    if act not in ("gelu_new", "gelu_pytorch_tanh", "gelu"):
        print(f"warning: activation_function={act}; ggml gpt-2 uses tanh-GELU", file=sys.stderr)
    if cfg.get("n_inner") not in (None, 4 * cfg["n_embd"]):
        sys.exit("n_inner != 4*n_embd is not supported by the ggml gpt-2 example")
    hp = dict(n_vocab=cfg["vocab_size"], n_ctx=cfg["n_positions"], n_embd=cfg["n_embd"],
              n_head=cfg["n_head"], n_layer=cfg["n_layer"])
    st = os.path.join(model_dir, "model.safetensors")
    if not os.path.exists(st):
        sys.exit(f"no model.safetensors in {model_dir}")
    return hp, read_safetensors(st)


def random_source(shape, seed):
    n_layer, n_embd, n_head, n_ctx = SHAPES[shape]
    hp = dict(n_vocab=N_VOCAB, n_ctx=n_ctx, n_embd=n_embd, n_head=n_head, n_layer=n_layer)
    rng = np.random.default_rng(seed)

    def normal(*shape):  # init std 0.02
        return (rng.standard_normal(shape, dtype=np.float32) * np.float32(0.02))

    def gen():
        # HF GPT2 layout (Conv1D weights are [in, out])
        E = n_embd
        yield "transformer.wte.weight", normal(N_VOCAB, E)
        yield "transformer.wpe.weight", normal(n_ctx, E)
        for i in range(n_layer):
            p = f"transformer.h.{i}."
            yield p + "ln_1.weight", np.ones(E, np.float32)
            yield p + "ln_1.bias", np.zeros(E, np.float32)
            yield p + "attn.c_attn.weight", normal(E, 3 * E)
            yield p + "attn.c_attn.bias", np.zeros(3 * E, np.float32)
            yield p + "attn.c_proj.weight", normal(E, E)
            yield p + "attn.c_proj.bias", np.zeros(E, np.float32)
            yield p + "ln_2.weight", np.ones(E, np.float32)
            yield p + "ln_2.bias", np.zeros(E, np.float32)
            yield p + "mlp.c_fc.weight", normal(E, 4 * E)
            yield p + "mlp.c_fc.bias", np.zeros(4 * E, np.float32)
            yield p + "mlp.c_proj.weight", normal(4 * E, E)
            yield p + "mlp.c_proj.bias", np.zeros(E, np.float32)
        yield "transformer.ln_f.weight", np.ones(E, np.float32)
        yield "transformer.ln_f.bias", np.zeros(E, np.float32)

    return hp, gen()


# ---------------------------------------------------------------- naming
_LAYER_RE = re.compile(r"^h\.(\d+)\.(ln_1|ln_2|attn\.c_attn|attn\.c_proj|mlp\.c_fc|mlp\.c_proj)\.(weight|bias)$")
_CONV1D = ("attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj")


def ggml_name(hf_name):
    """Map HF name (with or without 'transformer.' prefix) to (ggml_name, is_conv1d_weight).
    Returns (None, False) for tensors to skip."""
    n = hf_name[len("transformer."):] if hf_name.startswith("transformer.") else hf_name
    if n.endswith(".attn.bias") or n.endswith(".attn.masked_bias"):
        return None, False
    fixed = {"wte.weight": "model/wte", "wpe.weight": "model/wpe",
             "ln_f.weight": "model/ln_f/g", "ln_f.bias": "model/ln_f/b",
             "lm_head.weight": "model/lm_head"}
    if n in fixed:
        return fixed[n], False
    m = _LAYER_RE.match(n)
    if not m:
        raise ValueError(f"unrecognized tensor name {hf_name}")
    i, mod, kind = m.groups()
    suffix = {"weight": "g", "bias": "b"}[kind] if mod.startswith("ln_") else {"weight": "w", "bias": "b"}[kind]
    return f"model/h{i}/{mod.replace('.', '/')}/{suffix}", (kind == "weight" and mod in _CONV1D)


# ---------------------------------------------------------------- writer
def write_model(out_path, hp, tensors, vocab_path, use_f16, h5_exact=False):
    with open(vocab_path, "r", encoding="utf-8") as f:
        encoder = json.load(f)
    toks = sorted(encoder.items(), key=lambda kv: kv[1])
    if [v for _, v in toks] != list(range(len(toks))):
        sys.exit("vocab ids are not 0..n-1")
    if len(toks) != hp["n_vocab"]:
        sys.exit(f"vocab has {len(toks)} tokens but model n_vocab={hp['n_vocab']}")
    if hp["n_embd"] % hp["n_head"]:
        sys.exit("n_embd not divisible by n_head")
    byte_decoder = {v: k for k, v in bytes_to_unicode().items()}

    os.makedirs(os.path.dirname(os.path.abspath(out_path)), exist_ok=True)
    tmp = out_path + ".tmp"
    n_written, nbytes = 0, 0
    wte = None
    with open(tmp, "wb") as fout:
        fout.write(struct.pack("<i", GGML_MAGIC))
        for k in ("n_vocab", "n_ctx", "n_embd", "n_head", "n_layer"):
            fout.write(struct.pack("<i", hp[k]))
        fout.write(struct.pack("<i", 1 if use_f16 else 0))
        fout.write(struct.pack("<i", len(toks)))
        for key, _ in toks:
            text = bytes(byte_decoder[c] for c in key)
            fout.write(struct.pack("<i", len(text)))
            fout.write(text)

        for hf_name, data in tensors:
            name, is_conv = ggml_name(hf_name)
            if name is None:
                continue
            data = np.asarray(data)
            if data.dtype != np.float32:
                data = data.astype(np.float32)
            data = data.squeeze()
            if name == "model/wte":
                wte = data
            if name == "model/lm_head" and wte is not None and data.shape == wte.shape and np.array_equal(data, wte):
                continue  # tied; the loader reuses model/wte
            n_dims = data.ndim

            if h5_exact:  # literal convert-h5-to-ggml.py behaviour (known not to load)
                f16 = use_f16 and hf_name.endswith(".weight") and n_dims == 2
                if name.endswith("/mlp/c_proj/w"):
                    data = data.T
            else:
                if is_conv:
                    data = data.T  # HF Conv1D [in, out] -> [out, in]
                f16 = use_f16 and n_dims == 2 and (name in ("model/wte", "model/lm_head") or name.endswith("/w"))
            data = np.ascontiguousarray(data.astype(np.float16 if f16 else np.float32))
            bname = name.encode("utf-8")
            fout.write(struct.pack("<iii", n_dims, len(bname), 1 if f16 else 0))
            for i in range(n_dims):
                fout.write(struct.pack("<i", data.shape[n_dims - 1 - i]))
            fout.write(bname)
            fout.write(data.tobytes())
            n_written += 1
            nbytes += data.nbytes
    os.replace(tmp, out_path)
    return n_written, nbytes


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="src", required=True)
    a = sub.add_parser("hf", help="convert a HF safetensors model dir")
    a.add_argument("model_dir")
    a.add_argument("out")
    b = sub.add_parser("random", help="random weights for a named shape")
    b.add_argument("shape", choices=sorted(SHAPES))
    b.add_argument("out")
    b.add_argument("--seed", type=int, default=0)
    for p in (a, b):
        p.add_argument("--ftype", choices=["f32", "f16"], default="f16")
        p.add_argument("--vocab", default=None, help="vocab.json (default: model dir's, else fail)")
        p.add_argument("--h5-exact", action="store_true", help="mimic convert-h5-to-ggml.py literally (does not load)")
    args = ap.parse_args()

    if args.src == "hf":
        hp, tensors = hf_source(args.model_dir)
        vocab = args.vocab or (os.path.join(args.model_dir, "vocab.json")
                               if os.path.exists(os.path.join(args.model_dir, "vocab.json")) else DEFAULT_VOCAB)
    else:
        hp, tensors = random_source(args.shape, args.seed)
        vocab = args.vocab or DEFAULT_VOCAB
    n, nbytes = write_model(args.out, hp, tensors, vocab, args.ftype == "f16", args.h5_exact)
    print(f"wrote {args.out}: {hp} ftype={args.ftype} tensors={n} tensor_bytes={nbytes/2**20:.2f} MiB"
          f" file={os.path.getsize(args.out)/2**20:.2f} MiB")


if __name__ == "__main__":
    main()

"""scripts/bench-ggml: its argument checks and its clear exit 2 when something it needs is missing
(no ggml needed), plus a real paired run on a tiny random model when WRITEUP_GGML_BUILD names a
ggml build with the gpt-2 examples (skipped otherwise)."""
import os
import pathlib
import stat
import subprocess

import pytest

from deploy_support import ROOT, TINY

SCRIPT = ROOT / "scripts" / "bench-ggml"
BUILD = pathlib.Path(os.environ.get("WRITEUP_SERVER_BIN", str(ROOT / "build" / "writeup-server"))).parent


def bench(*args, env=None, python=("/usr/bin/python3",), timeout=120):
    e = {k: v for k, v in os.environ.items() if k not in ("WRITEUP_GGML_BUILD", "WRITEUP_BENCH_BIN")}
    e.update(env or {})
    return subprocess.run([*python, str(SCRIPT), *map(str, args)], env=e, text=True,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=timeout)


def fake_executable(path):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("#!/bin/sh\nexit 0\n")
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


@pytest.fixture
def fake_ggml(tmp_path):
    """A build folder with all three ggml programs (stubs: the checks only look for them)."""
    d = tmp_path / "ggml-build"
    for name in ("gpt-2-backend", "gpt-2-batched", "gpt-2-quantize"):
        fake_executable(d / "bin" / name)
    return d


@pytest.fixture
def fake_bench(tmp_path):
    return fake_executable(tmp_path / "writeup-bench")


@pytest.mark.parametrize("flag,value,message", [
    ("--threads", "0", "--threads: must be >= 1, got 0"),
    ("--tokens", "1", "--tokens: must be >= 2, got 1"),
    ("--runs", "x", "--runs: not an integer: 'x'"),
    ("--parallel", "1", "--parallel: must be >= 2, got 1"),
])
def test_bad_numbers_are_usage_errors(flag, value, message):
    r = bench(flag, value)
    assert r.returncode == 2
    assert message in r.stderr


def test_unknown_option_is_a_usage_error():
    r = bench("--tokenz", "8")
    assert r.returncode == 2
    assert "unrecognized arguments: --tokenz" in r.stderr


def test_help_names_the_options():
    r = bench("--help")
    assert r.returncode == 0
    for opt in ("--model", "--medium", "--ggml-build", "--threads", "--tokens", "--runs", "--parallel"):
        assert opt in r.stdout


def test_no_ggml_build_says_how_to_give_one(fake_bench):
    r = bench("--model", TINY, "--medium", "none", "--writeup-bench", fake_bench)
    assert r.returncode == 2, r.stderr
    assert "no ggml build: pass --ggml-build DIR or set WRITEUP_GGML_BUILD" in r.stderr
    assert r.stdout == ""


def test_missing_ggml_programs_are_named(tmp_path, fake_bench):
    d = tmp_path / "partial"
    fake_executable(d / "bin" / "gpt-2-backend")
    r = bench("--model", TINY, "--medium", "none", "--writeup-bench", fake_bench, "--ggml-build", d)
    assert r.returncode == 2, r.stderr
    assert f"ggml build {d} lacks gpt-2-batched, gpt-2-quantize" in r.stderr
    assert "gpt-2-backend" not in r.stderr.split("lacks", 1)[1].split("(")[0]


def test_env_names_the_ggml_build(fake_ggml, fake_bench, tmp_path):
    # every check passes except the missing model: the ggml build came from the environment
    r = bench("--model", tmp_path / "nope", "--medium", "none", "--writeup-bench", fake_bench,
              env={"WRITEUP_GGML_BUILD": str(fake_ggml)})
    assert r.returncode == 2, r.stderr
    assert f"--model: no directory {tmp_path / 'nope'}" in r.stderr
    assert "ggml build" not in r.stderr and "numpy" not in r.stderr


def test_missing_writeup_bench_and_medium_files_are_named(fake_ggml, tmp_path):
    medium = tmp_path / "medium"
    medium.mkdir()
    (medium / "config.json").write_text("{}")
    r = bench("--model", TINY, "--medium", medium, "--ggml-build", fake_ggml,
              "--writeup-bench", tmp_path / "no-bench")
    assert r.returncode == 2, r.stderr
    assert f"no writeup-bench at {tmp_path / 'no-bench'}" in r.stderr
    assert f"--medium: {medium} has no model.safetensors, vocab.json" in r.stderr


def test_missing_numpy_is_named(fake_ggml, fake_bench):
    # python -S: no site-packages, so no numpy (the converter's one dependency)
    r = bench("--model", TINY, "--medium", "none", "--ggml-build", fake_ggml, "--writeup-bench", fake_bench,
              python=("/usr/bin/python3", "-S"))
    assert r.returncode == 2, r.stderr
    assert "numpy is not importable" in r.stderr
    assert "apt-get install python3-numpy" in r.stderr


GGML_BUILD = os.environ.get("WRITEUP_GGML_BUILD")


@pytest.mark.skipif(not GGML_BUILD, reason="WRITEUP_GGML_BUILD (a ggml build with the gpt-2 examples) not set")
def test_real_paired_run_on_a_tiny_model(tmp_path):
    # writeup-make-model's tiny shape (n_embd 64): q8_0 needs rows of 32 values, the tiny fixture has 16
    model = tmp_path / "tiny64"
    subprocess.run([str(BUILD / "writeup-make-model"), "--shape", "tiny", "--out", str(model),
                    "--vocab-from", str(TINY)], check=True, timeout=120, stdout=subprocess.DEVNULL)
    def run(tokens, runs, parallel):
        return bench("--model", model, "--medium", model, "--work", tmp_path / "work", "--tokens", tokens,
                     "--runs", runs, "--parallel", parallel, "--writeup-bench", BUILD / "writeup-bench",
                     env={"WRITEUP_GGML_BUILD": GGML_BUILD}, timeout=600)

    r = run(8, 2, 4)
    assert r.returncode == 0, r.stderr[-3000:]
    rows = [line for line in r.stdout.splitlines() if line.startswith("| tiny64")]
    assert len(rows) == 6, r.stdout  # 4 small rows, medium in two processes and interleaved in one
    for row in rows:
        cells = [c.strip() for c in row.strip("|").split("|")]
        assert "ms (" in cells[1] and "ms (" in cells[2] and cells[3].endswith("x"), row
        assert len(cells[4].split()) == 2, row  # one speed-up per round
        assert cells[6] in ("yes", "no", "—"), row
    assert "(7 tokens on each side)" in r.stdout
    assert "gpt-2-batched" in r.stdout and "-np 4" in r.stdout
    assert "writeup-bench pair" in r.stdout and "--against f32" in r.stdout
    converted = sorted(p.name for p in (tmp_path / "work" / "tiny64").iterdir())
    assert converted == ["ggml-f16.bin", "ggml-f32.bin", "ggml-q8_0.bin", "source.json"]
    # a second run reuses the converted files
    r2 = run(4, 1, 2)
    assert r2.returncode == 0, r2.stderr[-3000:]
    assert "reusing" in r2.stderr

"""writeup-bench pair (two weight formats' decode steps interleaved in one process, the medium
row of scripts/bench-ggml): its JSON line on the tiny fixture, and clear errors for bad options."""
import json
import os
import pathlib
import subprocess

from deploy_support import ROOT, TINY

BENCH = pathlib.Path(os.environ.get("WRITEUP_SERVER_BIN", str(ROOT / "build" / "writeup-server"))).parent / "writeup-bench"


def pair(*args):
    # --packed-cache off: nothing may be written beside the fixture
    return subprocess.run([str(BENCH), "pair", "--model", str(TINY), "--threads", "1", "--packed-cache", "off",
                           *map(str, args)], text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=300)


def report(r):
    lines = [line for line in r.stdout.splitlines() if line.startswith("{")]
    assert r.returncode == 0 and len(lines) == 1, r.stdout + r.stderr
    return json.loads(lines[0])


def test_both_formats_run_every_step_and_report_their_medians():
    j = report(pair("--weights", "int8", "--against", "f32", "--tokens", 6, "--runs", 2))
    assert (j["bench"], j["a"], j["b"]) == ("pair", "int8", "f32")
    assert j["kernel_a"] in ("avx512-vnni", "avx512bw", "avx2", "generic")
    assert j["kernel_b"] in ("avx512", "avx2", "generic")
    assert j["prompt_tokens"] == 7  # "The history of the written word begins"
    assert (j["tokens"], j["runs"], j["steps"]) == (6, 2, 2 * 5)  # the prefill is not a timed step
    assert j["a_median_step_ms"] > 0 and j["b_median_step_ms"] > 0
    assert 0 < j["b_over_a_p10"] <= j["b_over_a_median"] <= j["b_over_a_p90"]
    assert not (TINY / ".writeup-cache").exists()


def test_the_formats_and_sampling_are_the_callers():
    j = report(pair("--weights", "bf16", "--against", "int8", "--tokens", 3, "--runs", 1, "--temperature", 0.9,
                    "--top-k", 40, "--top-p", 0.9, "--prompt", "Once"))
    assert (j["a"], j["b"], j["prompt_tokens"], j["steps"]) == ("bf16", "int8", 1, 2)


def test_bad_options_are_named():
    cases = [
        (("--against", "f16"), "unknown weight format 'f16'"),
        (("--tokens", 1), "pair: --tokens must be at least 2"),
        (("--runs", 0), "--runs at least 1"),
        (("--top-p", 1.5), "top_p"),
        (("--againts", "f32"), "unknown option --againts"),
    ]
    for args, message in cases:
        r = pair(*args)
        assert r.returncode != 0, args
        assert message in r.stderr, (args, r.stderr)
        assert "{" not in r.stdout, args

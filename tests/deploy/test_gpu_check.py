"""scripts/gpu-check.sh and scripts/gpu/: syntax and shellcheck, the packed hiredis/PCRE2
dependencies (pkg-config resolves them, a C program builds and runs against them with CMake's
pkg_check_modules as the project uses it), and a dry run of the whole script on CPU that reuses
an existing build (WRITEUP_BUILD_DIR, else the folder of WRITEUP_SERVER_BIN, else build/)."""
import json
import os
import pathlib
import shutil
import subprocess
import sys

import pytest

from deploy_support import ROOT, SERVER_BIN, need_tool

SCRIPT = ROOT / "scripts" / "gpu-check.sh"
GPU = ROOT / "scripts" / "gpu"
PACK = GPU / "pack-deps.sh"
PY_HELPERS = sorted(GPU.glob("*.py"))


def test_scripts_parse_and_are_shellcheck_clean():
    for script in (SCRIPT, PACK):
        r = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)
        assert r.returncode == 0, r.stderr
    r = subprocess.run([need_tool("shellcheck"), str(SCRIPT), str(PACK)], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr


def test_python_helpers_compile_and_document_themselves():
    assert {p.name for p in PY_HELPERS} >= {"results.py", "golden_check.py", "hf_check.py", "oom_check.py",
                                            "bench_writeup.py"}
    for p in PY_HELPERS:
        compile(p.read_text(), str(p), "exec")
    r = subprocess.run([sys.executable, str(GPU / "hf_check.py"), "--help"], capture_output=True, text=True)
    assert r.returncode == 0 and "bench" in r.stdout  # no torch needed to ask


def test_help_lists_the_options():
    r = subprocess.run(["bash", str(SCRIPT), "--help"], capture_output=True, text=True, timeout=30)
    assert r.returncode == 0
    for opt in ("--out", "--dry-run", "--reuse-build", "--skip-unit", "--deps", "--torch-prefix", "--budget"):
        assert opt in r.stdout
    r = subprocess.run(["bash", str(SCRIPT), "--bogus"], capture_output=True, text=True, timeout=30)
    assert r.returncode == 2 and "--bogus" in r.stderr


@pytest.fixture(scope="module")
def deps(tmp_path_factory):
    for tool in ("pkg-config", "objdump"):
        need_tool(tool)
    dest = tmp_path_factory.mktemp("deps") / "gpu-deps"
    r = subprocess.run(["bash", str(PACK), str(dest)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    return dest


def only_packed(deps):
    """An environment where pkg-config sees the packed folder and nothing of the system's."""
    env = dict(os.environ)
    env["PKG_CONFIG_PATH"] = str(deps / "lib" / "pkgconfig")
    env["PKG_CONFIG_LIBDIR"] = str(deps / "lib" / "pkgconfig")
    return env


def test_pack_deps_is_small_relocatable_and_complete(deps):
    size = sum(p.stat().st_size for p in deps.rglob("*") if p.is_file() and not p.is_symlink())
    assert size < 8 << 20, f"{size} bytes"
    assert (deps / "include" / "hiredis" / "hiredis.h").is_file()
    assert (deps / "include" / "pcre2.h").is_file()
    for pc in ("hiredis.pc", "libpcre2-8.pc"):
        text = (deps / "lib" / "pkgconfig" / pc).read_text()
        assert "prefix=${pcfiledir}/../.." in text and "/usr" not in text.split("Name:")[0]
    # soname symlinks and -l symlinks point inside the folder
    for name in ("libhiredis.so", "libpcre2-8.so", "libpcre2-8.so.0"):
        link = deps / "lib" / name
        assert link.exists() and link.resolve().parent == (deps / "lib").resolve(), name
    # moved elsewhere, it still resolves (relocatable)
    moved = deps.parent / "moved"
    shutil.copytree(deps, moved, symlinks=True)
    r = subprocess.run(["pkg-config", "--cflags", "--libs", "hiredis", "libpcre2-8"], capture_output=True,
                       text=True, env=only_packed(moved))
    assert r.returncode == 0, r.stderr
    flags = r.stdout.split()
    incs = [pathlib.Path(f[2:]).resolve() for f in flags if f.startswith("-I")]
    libs = [pathlib.Path(f[2:]).resolve() for f in flags if f.startswith("-L")]
    assert (moved / "include").resolve() in incs
    assert libs and all(p == (moved / "lib").resolve() for p in libs)
    assert "-lhiredis" in flags and "-lpcre2-8" in flags
    assert any((p / "hiredis" / "hiredis.h").is_file() for p in incs)
    assert any((p / "pcre2.h").is_file() for p in incs)


def test_the_packed_pkg_config_runs(deps):
    r = subprocess.run([str(deps / "bin" / "pkg-config"), "--modversion", "hiredis", "libpcre2-8"],
                       capture_output=True, text=True, env=only_packed(deps))
    assert r.returncode == 0, r.stderr
    assert len(r.stdout.split()) == 2


def test_cmake_finds_and_links_the_packed_deps_like_the_project(deps, tmp_path):
    need_tool("cmake")
    src = tmp_path / "src"
    src.mkdir()
    (src / "CMakeLists.txt").write_text(
        "cmake_minimum_required(VERSION 3.18)\nproject(t C)\nfind_package(PkgConfig REQUIRED)\n"
        "pkg_check_modules(PCRE2 REQUIRED IMPORTED_TARGET libpcre2-8)\n"
        "pkg_check_modules(HIREDIS REQUIRED IMPORTED_TARGET hiredis)\n"
        "add_executable(t t.c)\ntarget_link_libraries(t PRIVATE PkgConfig::PCRE2 PkgConfig::HIREDIS)\n")
    (src / "t.c").write_text(
        "#define PCRE2_CODE_UNIT_WIDTH 8\n#include <pcre2.h>\n#include <hiredis/hiredis.h>\n#include <stdio.h>\n"
        "int main(void) { int e; PCRE2_SIZE o; pcre2_code *c = pcre2_compile((PCRE2_SPTR)\"a+\", "
        "PCRE2_ZERO_TERMINATED, 0, &e, &o, NULL);\n"
        "  redisReader *r = redisReaderCreate(); printf(\"%d %d\\n\", c != NULL, r != NULL); return 0; }\n")
    env = only_packed(deps)
    build = tmp_path / "build"
    r = subprocess.run(["cmake", "-S", str(src), "-B", str(build)], capture_output=True, text=True, env=env,
                       timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    cache = (build / "CMakeCache.txt").read_text()
    assert str(deps) in cache  # found the packed ones, not /usr's
    r = subprocess.run(["cmake", "--build", str(build)], capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    env["LD_LIBRARY_PATH"] = str(deps / "lib")
    r = subprocess.run([str(build / "t")], capture_output=True, text=True, env=env, timeout=30)
    assert r.returncode == 0 and r.stdout.split() == ["1", "1"], r.stdout + r.stderr
    r = subprocess.run(["ldd", str(build / "t")], capture_output=True, text=True, env=env)
    assert str(deps / "lib" / "libhiredis.so") in r.stdout, r.stdout


def existing_build():
    d = os.environ.get("WRITEUP_BUILD_DIR")
    if d:
        return pathlib.Path(d)
    server = pathlib.Path(SERVER_BIN)
    if (server.parent / "writeup-generate").exists():
        return server.parent
    return ROOT / "build"


def test_dry_run_on_cpu(tmp_path):
    build = existing_build()
    for tool in ("writeup-server", "writeup-generate", "writeup-make-model", "writeup-bench"):
        if not os.access(build / tool, os.X_OK):
            pytest.fail(f"no {tool} in {build}: build the project (with tools), or set WRITEUP_BUILD_DIR")
    out = tmp_path / "out"
    env = dict(os.environ, PYTHON=sys.executable)
    env.pop("OUT", None)
    unit = ["--unit-filter", "Utf8.*", "--unit-shards", "2"] if (build / "tests" / "writeup_unit_tests").exists() \
        else ["--skip-unit"]
    r = subprocess.run(["bash", str(SCRIPT), "--dry-run", "--reuse-build", str(build), "--out", str(out),
                        "--work", str(tmp_path / "work")] + unit,
                       capture_output=True, text=True, env=env, timeout=300)
    results = json.loads((out / "results.json").read_text())
    steps = {s["name"]: s for s in results["steps"]}
    report = r.stdout[-3000:] + r.stderr[-3000:]
    assert list(steps) == ["env", "build", "unit_tests", "golden", "make_model", "hf_greedy", "oom",
                           "bench_writeup", "bench_hf"], report
    for name in ("hf_greedy", "bench_hf"):  # CUDA / HF only
        assert steps[name]["status"] == "skipped", report
    for name in ("env", "build", "golden", "make_model", "oom", "bench_writeup"):
        assert steps[name]["status"] == "passed", (name, steps[name], report)
    assert steps["unit_tests"]["status"] == ("skipped" if unit == ["--skip-unit"] else "passed"), report
    assert r.returncode == 0 and results["ok"] and results["mode"] == "dry-run", report
    assert steps["golden"]["details"]["greedy_identical"] == "3/3"
    oom = steps["oom"]["details"]
    assert oom["mode"] == "simulated" and oom["oom_total_delta"] >= 1 and oom["ready_after"] == 200
    bench = steps["bench_writeup"]["details"]
    assert bench["single_stream_tokens_per_s"] > 0 and bench["batch_tokens_per_s"] > 0 and bench["ttft_ms"] > 0
    md = (out / "results.md").read_text()
    assert "| oom | passed |" in md and "| bench_hf | skipped |" in md and "writeup vs Hugging Face" in md
    for log in ("env", "golden", "oom", "bench_writeup"):
        assert (out / "logs" / f"{log}.log").is_file()

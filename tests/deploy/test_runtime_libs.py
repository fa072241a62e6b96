"""scripts/runtime-libs: the shared libraries the CPU image's runtime stage copies instead of
installing libtorch1.13 with all its hard dependencies. The copied set must be enough by itself:
the server is started through the copied dynamic loader with only that folder to search
(--library-path DIR --inhibit-cache: no ld.so.cache, so the system's libtorch is not found
through it), must answer a completion, and every shared object mapped into the process must
come from the folder (a library found elsewhere, or one dlopen()ed later, would show up)."""
import pathlib
import re
import shutil
import subprocess
import tempfile
import time

import pytest
import requests

from deploy_support import ROOT, TINY, server_bin

SCRIPT = ROOT / "scripts" / "runtime-libs"
SHARED_OBJECT = re.compile(r"\.so(\.[0-9.]+)?$")


def run_script(*args):
    return subprocess.run([str(SCRIPT), *map(str, args)], capture_output=True, text=True, timeout=300)


@pytest.fixture
def scratch():
    """A folder removed after the test (a copied set is ~500 MB: pytest's tmp_path would keep it)."""
    d = pathlib.Path(tempfile.mkdtemp(prefix="writeup-runtime-libs-"))
    yield d
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def libs(scratch):
    r = run_script(scratch, server_bin())
    assert r.returncode == 0, r.stderr
    assert re.search(r"runtime-libs: \d+ libraries, \d+ MiB", r.stderr)
    return scratch


def test_the_copied_libraries_alone_run_the_server(libs):
    names = {p.name for p in libs.iterdir()}
    loader = [n for n in names if n.startswith("ld-linux")]
    assert len(loader) == 1, names
    assert any(n.startswith("libtorch_cpu.so") for n in names)
    assert all(not (libs / n).is_symlink() for n in names)       # real files: COPY keeps them
    cmd = [str(libs / loader[0]), "--library-path", str(libs), "--inhibit-cache", server_bin(),
           "--host", "127.0.0.1", "--port", "0", "--log-level", "warn", "--model", f"tiny-gpt2={TINY}"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        assert "listening on" in line, (line, proc.stderr.read() if proc.poll() is not None else "")
        url = line.split()[-1]
        deadline = time.time() + 60
        while requests.get(url + "/ready", timeout=5).status_code != 200:
            assert time.time() < deadline, "never ready"
            time.sleep(0.05)
        r = requests.post(url + "/v1/completions", timeout=60,
                          json={"model": "tiny-gpt2", "prompt": "The quick brown fox", "max_tokens": 8,
                                "temperature": 0})
        assert r.status_code == 200, r.text
        assert r.json()["usage"]["completion_tokens"] > 0
        mapped = set()
        for row in (pathlib_text(f"/proc/{proc.pid}/maps")).splitlines():
            parts = row.split(None, 5)
            if len(parts) == 6 and SHARED_OBJECT.search(parts[5].strip()):
                mapped.add(parts[5].strip())
        assert any("libtorch_cpu.so" in p for p in mapped)
        outside = sorted(p for p in mapped if not p.startswith(str(libs) + "/"))
        assert not outside, f"loaded from outside the copied set: {outside}"
    finally:
        proc.terminate()
        proc.wait(10)


def pathlib_text(path):
    with open(path) as f:
        return f.read()


def test_no_libc_leaves_glibc_to_the_image(scratch):
    r = run_script("--no-libc", scratch, server_bin())
    assert r.returncode == 0, r.stderr
    names = {p.name for p in scratch.iterdir()}
    assert not [n for n in names if n.startswith(("ld-linux", "libc.so", "libm.so", "libpthread.so"))], names
    assert any(n.startswith("libtorch_cpu.so") for n in names)


def test_an_unresolvable_library_is_named(tmp_path):
    # a binary whose DT_NEEDED names a library that exists nowhere
    src = tmp_path / "x.c"
    src.write_text("int main(void) { return 0; }\n")
    stub = tmp_path / "libwriteup-missing.so"
    subprocess.run(["cc", "-shared", "-Wl,-soname,libwriteup-missing.so", "-o", str(stub), "-x", "c", "/dev/null"],
                   check=True)
    exe = tmp_path / "x"
    subprocess.run(["cc", "-o", str(exe), str(src), "-Wl,--no-as-needed", f"-L{tmp_path}", "-lwriteup-missing"],
                   check=True)
    stub.unlink()
    r = run_script(tmp_path / "out", exe)
    assert r.returncode == 1
    assert "libwriteup-missing.so" in r.stderr and "cannot find" in r.stderr
    r = run_script(tmp_path / "out")
    assert r.returncode == 2 and "usage" in r.stderr


def test_shellcheck_clean():
    from deploy_support import need_tool
    r = subprocess.run([need_tool("shellcheck"), str(SCRIPT)], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout

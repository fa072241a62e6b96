"""scripts/serve with a prebuilt binary (--server-bin: the install and Release build steps are
what .ci/run already exercises): the model choice, the notice, the URLs, and Ctrl-C."""
import json
import os
import shutil
import signal
import subprocess
import time

import requests

from deploy_support import ROOT, TINY, need_tool, server_bin

SERVE = ROOT / "scripts" / "serve"
NOTICE = "random weights: output is random text; run scripts/fetch-model gpt2 for real weights"


class Serve:
    def __init__(self, tmp_path, endpoint, *args, web=False):
        self.build = tmp_path / "build"
        self.models = tmp_path / "models"
        env = {**os.environ, "HF_ENDPOINT": endpoint, "WRITEUP_BUILD_DIR": str(self.build)}
        self.stderr = open(tmp_path / "serve.err", "w+")
        self.proc = subprocess.Popen(
            ["bash", str(SERVE), "--server-bin", server_bin(), "--port", "0",
             "--models-dir", str(self.models), *([] if web else ["--no-web"]), *args,
             "--", "--log-level", "info"],
            stdout=subprocess.PIPE, stderr=self.stderr, text=True, env=env)
        line = self.proc.stdout.readline()
        if "listening on" not in line:
            self.proc.kill()
            raise AssertionError(f"serve did not start: {line!r}\n{self.err()}")
        self.url = line.split()[-1]
        deadline = time.time() + 30
        while requests.get(self.url + "/ready", timeout=5).status_code != 200:
            assert time.time() < deadline, "never ready"
            time.sleep(0.05)

    def err(self):
        self.stderr.flush()
        self.stderr.seek(0)
        return self.stderr.read()

    def ctrl_c(self):
        self.proc.send_signal(signal.SIGINT)     # serve exec'd the server: it is this pid
        return self.proc.wait(timeout=15)

    def close(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.stderr.close()


def test_shellcheck_clean():
    r = subprocess.run([need_tool("shellcheck"), str(SERVE), str(ROOT / "scripts" / "install-deps.sh"),
                        str(ROOT / "scripts" / "build-web")],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stdout


def test_offline_serves_the_tiny_model_and_says_so(tmp_path):
    s = Serve(tmp_path, "http://127.0.0.1:9")      # nothing listens there: offline
    try:
        models = requests.get(s.url + "/v1/models", timeout=5).json()["data"]
        assert [(m["id"], m.get("notice")) for m in models] == [("tiny-gpt2", NOTICE)]
        r = requests.post(s.url + "/v1/completions", timeout=30,
                          json={"prompt": "Hello", "max_tokens": 4, "seed": 1})
        assert r.status_code == 200 and r.json()["model"] == "tiny-gpt2"
        err = s.err()
        assert "could not download gpt2" in err
        assert "RANDOM weights" in err and "scripts/fetch-model gpt2" in err
        assert "curl -s http://127.0.0.1:PORT/v1/completions" in err
        assert "ws://127.0.0.1:PORT/ws/async/writeup/text_generation/session/" in err
        config = json.loads((s.build / "serve.json").read_text())
        assert config["models"] == [{"name": "tiny-gpt2", "path": str(TINY), "device": "cpu",
                                     "dtype": "float32", "notice": NOTICE}]
        assert config["cache"]["redis"] is None
        assert s.ctrl_c() == 0
        assert NOTICE in s.proc.stdout.read()  # the server's own start-up log line
        assert not s.models.exists()
    finally:
        s.close()


def test_online_fetches_gpt2_then_reuses_it(tmp_path, hub):
    s = Serve(tmp_path, hub.url)
    try:
        models = requests.get(s.url + "/v1/models", timeout=5).json()["data"]
        assert [m["id"] for m in models] == ["gpt2"] and "notice" not in models[0]
        assert (s.models / "gpt2" / "model.safetensors").read_bytes() == (TINY / "model.safetensors").read_bytes()
        assert "RANDOM" not in s.err()
        assert s.ctrl_c() == 0
    finally:
        s.close()

    hub.log.clear()
    s = Serve(tmp_path, hub.url)                   # models/gpt2 is there now: no download
    try:
        assert [m["id"] for m in requests.get(s.url + "/v1/models", timeout=5).json()["data"]] == ["gpt2"]
        assert hub.log == []
        assert s.ctrl_c() == 0
    finally:
        s.close()


def test_model_flag_and_pass_through_args(tmp_path):
    d = tmp_path / "mine"
    shutil.copytree(TINY, d)
    s = Serve(tmp_path, "http://127.0.0.1:9", "--model", f"my-model={d}", "--no-fetch")
    try:
        models = requests.get(s.url + "/v1/models", timeout=5).json()["data"]
        assert [m["id"] for m in models] == ["my-model"] and "notice" not in models[0]
        assert "downloading" not in s.err()
        assert s.ctrl_c() == 0
    finally:
        s.close()


def test_builds_and_serves_the_editor_page(tmp_path):
    """Without --no-web serve builds the page into its build folder and the server serves it."""
    if shutil.which("npm") is None or not (ROOT / "src" / "web" / "node_modules").is_dir():
        import pytest
        pytest.skip("npm or src/web/node_modules missing (scripts/install-deps.sh installs both)")
    s = Serve(tmp_path, "http://127.0.0.1:9", "--no-fetch", web=True)
    try:
        page = requests.get(s.url + "/", timeout=5)
        assert page.status_code == 200 and page.headers["Content-Type"] == "text/html; charset=utf-8"
        assert '<div id="root">' in page.text
        assets = [p for p in (s.build / "web" / "assets").iterdir() if p.suffix == ".js"]
        assert assets, "no bundle in the build folder"
        js = requests.get(s.url + "/assets/" + assets[0].name, timeout=5)
        assert js.status_code == 200 and js.headers["Cache-Control"] == "public, max-age=31536000, immutable"
        assert "Write with suggestions: open http://127.0.0.1:PORT/ in a browser" in s.err()
        config = json.loads((s.build / "serve.json").read_text())
        assert config["server"]["static_dir"] == str(s.build / "web")
        assert s.ctrl_c() == 0
    finally:
        s.close()


def test_without_npm_it_says_so_and_serves_the_api(tmp_path):
    """A PATH without node/npm: the page is not built, serve says why, and the API still works."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("bash", "python3", "dirname", "mkdir", "cat", "awk", "timeout", "env"):
        found = shutil.which(tool)
        if found:
            (bin_dir / tool).symlink_to(found)
    env = {**os.environ, "PATH": str(bin_dir), "WRITEUP_BUILD_DIR": str(tmp_path / "build")}
    proc = subprocess.Popen(["bash", str(SERVE), "--server-bin", server_bin(), "--port", "0", "--no-fetch"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        line = proc.stdout.readline()
        assert "listening on" in line, proc.stderr.read() if proc.poll() is not None else line
        url = line.split()[-1]
        assert requests.get(url + "/health", timeout=5).status_code == 200
        assert requests.get(url + "/", timeout=5).status_code == 404
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=15)
        err = proc.stderr.read()
        assert "no node/npm: serving the API alone" in err and "no editor page" in err
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_bad_flags_fail_clearly(tmp_path):
    for args, msg in ((["--port", "http"], "--port must be a number"),
                      (["--bogus"], "unknown option --bogus"),
                      (["--model", f"x={tmp_path}"], "not a model directory")):
        r = subprocess.run(["bash", str(SERVE), "--server-bin", server_bin(), *args],
                           capture_output=True, text=True, timeout=30,
                           env={**os.environ, "WRITEUP_BUILD_DIR": str(tmp_path / "b")})
        assert r.returncode != 0 and msg in r.stderr, (args, r.stderr)

"""scripts/fetch-model against a fake hub on loopback (conftest.FakeHub) serving the tiny model."""
import os
import pathlib
import shutil
import pty
import subprocess
import sys
import tempfile
import time

import requests

from deploy_support import COMMIT, ROOT, TINY, server_bin

FETCH = ROOT / "scripts" / "fetch-model"
EXPECTED = ["config.json", "model.safetensors", "vocab.json", "merges.txt", "generation_config.json"]


def fetch(hub, *args, env=None, stderr=subprocess.PIPE):
    e = {k: v for k, v in os.environ.items() if k not in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN")}
    e.update({"HF_ENDPOINT": hub.url, **(env or {})})
    return subprocess.run(["/usr/bin/python3", str(FETCH), *map(str, args)], env=e, text=True,
                          stdout=subprocess.PIPE, stderr=stderr, timeout=60)


def assert_is_tiny(d):
    assert sorted(p.name for p in d.iterdir()) == sorted(EXPECTED)
    for name in EXPECTED:
        assert (d / name).read_bytes() == (TINY / name).read_bytes(), name


def leftovers(parent):
    return sorted(p.name for p in parent.iterdir() if p.name.startswith("."))


def cdn_gets(hub):
    return [h.get("Range") for m, p, h in hub.requests("/cdn/model.safetensors") if m == "GET"]


def test_fetch_by_manifest_name(hub, tmp_path):
    target = tmp_path / "models" / "gpt2"
    r = fetch(hub, "gpt2", "--dir", target)
    assert r.returncode == 0, r.stderr
    assert_is_tiny(target)
    assert leftovers(target.parent) == []
    # the manifest maps gpt2 to its hub repo; files are fetched at the API's commit
    assert hub.requests("/api/models/openai-community/gpt2/revision/main?blobs=true")
    assert hub.requests(f"/openai-community/gpt2/resolve/{COMMIT}/model.safetensors")
    assert "ready (5 files verified)" in r.stderr

    # the server loads what was fetched
    proc = subprocess.Popen([server_bin(), "--host", "127.0.0.1", "--port", "0", "--log-level", "warn",
                             "--model", f"gpt2={target}"], stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True)
    try:
        url = proc.stdout.readline().split()[-1]
        deadline = time.time() + 30
        while requests.get(url + "/ready", timeout=5).status_code != 200:
            assert time.time() < deadline
            time.sleep(0.05)
        assert [m["id"] for m in requests.get(url + "/v1/models", timeout=5).json()["data"]] == ["gpt2"]
    finally:
        proc.terminate()
        proc.wait(10)

    # a second run finds it there and downloads nothing
    n = len(hub.log)
    r = fetch(hub, "gpt2", "--dir", target)
    assert r.returncode == 0 and "already exists" in r.stderr
    assert len(hub.log) == n


def test_repo_id_defaults_to_models_dir_name(hub, tmp_path):
    target = tmp_path / "my-finetune"
    r = fetch(hub, "someone/my-finetune", "--dir", target, "--revision", "v1")
    assert r.returncode == 0, r.stderr
    assert_is_tiny(target)
    assert hub.requests("/api/models/someone/my-finetune/revision/v1?blobs=true")


def test_interrupted_download_resumes_with_range(hub, tmp_path):
    hub.cut_once["model.safetensors"] = 1_000_000
    target = tmp_path / "gpt2"
    r = fetch(hub, "gpt2", "--dir", target)
    assert r.returncode == 0, r.stderr
    assert "retrying" in r.stderr
    assert cdn_gets(hub) == [None, "bytes=1000000-"]
    assert_is_tiny(target)
    assert leftovers(tmp_path) == []


def test_resume_in_a_later_run(hub, tmp_path):
    hub.cut_once["model.safetensors"] = 1_500_000
    target = tmp_path / "gpt2"
    r = fetch(hub, "gpt2", "--dir", target, "--retries", "0")
    assert r.returncode == 1
    assert "run again to resume" in r.stderr
    assert not target.exists()
    partial = tmp_path / ".gpt2.download" / "model.safetensors.partial"
    assert partial.stat().st_size == 1_500_000
    r = fetch(hub, "gpt2", "--dir", target)
    assert r.returncode == 0, r.stderr
    assert cdn_gets(hub) == [None, "bytes=1500000-"]
    # the small files verified in the first run are not fetched again
    assert len(hub.requests(f"/openai-community/gpt2/resolve/{COMMIT}/config.json")) == 1
    assert_is_tiny(target)
    assert leftovers(tmp_path) == []


def test_bad_checksum_leaves_no_model(hub, tmp_path):
    hub.corrupt.add("model.safetensors")
    target = tmp_path / "gpt2"
    r = fetch(hub, "gpt2", "--dir", target)
    assert r.returncode == 1
    assert "sha256" in r.stderr and "does not match" in r.stderr
    assert not target.exists()
    assert leftovers(tmp_path) == []          # the staging folder is gone too


def test_existing_target_untouched_on_failure(hub, tmp_path):
    target = tmp_path / "gpt2"
    target.mkdir()
    (target / "config.json").write_text("{\"old\": true}")
    (target / "model.safetensors").write_bytes(b"old weights")
    before = {p.name: p.read_bytes() for p in target.iterdir()}

    hub.corrupt.add("model.safetensors")
    r = fetch(hub, "gpt2", "--dir", target, "--force")
    assert r.returncode == 1
    assert {p.name: p.read_bytes() for p in target.iterdir()} == before

    hub.cut_once["model.safetensors"] = 10_000
    hub.corrupt.clear()
    r = fetch(hub, "gpt2", "--dir", target, "--force", "--retries", "0")
    assert r.returncode == 1
    assert {p.name: p.read_bytes() for p in target.iterdir()} == before

    # and --force replaces it once the new copy is complete and verified
    r = fetch(hub, "gpt2", "--dir", target, "--force")
    assert r.returncode == 0, r.stderr
    assert_is_tiny(target)
    assert leftovers(tmp_path) == []


def test_sha256_from_x_linked_etag_when_api_has_no_blobs(hub, tmp_path):
    hub.blobs_in_api = False
    hub.corrupt.add("model.safetensors")
    r = fetch(hub, "gpt2", "--dir", tmp_path / "a")
    assert r.returncode == 1 and "sha256" in r.stderr
    assert not (tmp_path / "a").exists()
    hub.corrupt.clear()
    r = fetch(hub, "gpt2", "--dir", tmp_path / "b")
    assert r.returncode == 0, r.stderr
    assert_is_tiny(tmp_path / "b")


def test_token_goes_to_the_hub_only(hub, tmp_path):
    hub.token = "hf_secret"
    hub.cdn_host = f"localhost:{hub.port}"    # another host name, as the hub's CDN is
    r = fetch(hub, "gpt2", "--dir", tmp_path / "a")
    assert r.returncode == 1
    assert "401" in r.stderr and "HF_TOKEN" in r.stderr
    assert not (tmp_path / "a").exists()

    hub.log.clear()
    r = fetch(hub, "gpt2", "--dir", tmp_path / "b", env={"HF_TOKEN": "hf_secret"})
    assert r.returncode == 0, r.stderr
    assert_is_tiny(tmp_path / "b")
    for method, path, headers in hub.log:
        if path.startswith("/cdn/"):
            assert "Authorization" not in headers
        else:
            assert headers.get("Authorization") == "Bearer hf_secret"
    assert hub.requests("/cdn/")


def test_unknown_repo_and_repo_without_safetensors(hub, tmp_path):
    hub.repos = {"someone/bin-only"}
    r = fetch(hub, "nobody/nothing", "--dir", tmp_path / "x")
    assert r.returncode == 1 and "404" in r.stderr
    hub.files["pytorch_model.bin"] = hub.files.pop("model.safetensors")
    r = fetch(hub, "someone/bin-only", "--dir", tmp_path / "y")
    assert r.returncode == 1 and "no model.safetensors" in r.stderr
    assert sorted(os.listdir(tmp_path)) == []


def test_unreachable_hub_fails_fast(tmp_path):
    class Dead:
        url = "http://127.0.0.1:9"
    t = time.time()
    r = fetch(Dead, "gpt2", "--dir", tmp_path / "gpt2")
    assert r.returncode == 1 and "cannot reach" in r.stderr
    assert time.time() - t < 10
    assert not (tmp_path / "gpt2").exists()


def test_progress_bar_on_a_terminal(hub, tmp_path):
    master, slave = pty.openpty()
    try:
        r = fetch(hub, "gpt2", "--dir", tmp_path / "gpt2", stderr=slave)
        os.close(slave)
        out = b""
        while True:
            try:
                chunk = os.read(master, 65536)
            except OSError:
                break
            if not chunk:
                break
            out += chunk
    finally:
        os.close(master)
    assert r.returncode == 0
    text = out.decode()
    assert "model.safetensors" in text and "100.0%" in text and "\r" in text


if __name__ == "__main__":
    sys.exit("run with pytest")


def test_a_models_folder_it_may_not_write_gets_a_message_not_a_traceback(hub, tmp_path):
    """Issue 13: `docker run ... -v "$PWD/models:/models" writeup-server:cpu` with fetch-model
    as the image's uid 10001 and a host folder it does not own died with a PermissionError
    traceback. The message names the folder and the uid and gives the --user command."""
    models = pathlib.Path(tempfile.mkdtemp(prefix="writeup-ro-models-", dir="/tmp"))
    try:
        if os.getuid() == 0:
            # root writes anywhere: run as the image's user, for whom the folder is read-only
            os.chmod(models, 0o755)
            as_user = {"preexec_fn": lambda: (os.setgroups([]), os.setgid(10001), os.setuid(10001))}
            uid = 10001
        else:
            os.chmod(models, 0o555)
            as_user, uid = {}, os.getuid()
        e = {k: v for k, v in os.environ.items() if k not in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN")}
        e.update(HF_ENDPOINT=hub.url, WRITEUP_MODELS_DIR=str(models))
        r = subprocess.run(["/usr/bin/python3", str(FETCH), "gpt2"], env=e, text=True, capture_output=True,
                           timeout=60, cwd="/", **as_user)
        assert r.returncode == 1, r.stderr
        assert "Traceback" not in r.stderr and "PermissionError" not in r.stderr, r.stderr
        (line,) = [l for l in r.stderr.splitlines() if l.startswith("fetch-model: error:")]
        assert f"cannot write the model into {models}" in line
        assert f"uid {uid}" in line
        assert '--user "$(id -u):$(id -g)"' in line
        assert list(models.iterdir()) == []               # nothing half-written
    finally:
        os.chmod(models, 0o755)
        shutil.rmtree(models, ignore_errors=True)

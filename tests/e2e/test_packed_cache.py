"""The server's packed-weights cache (models[].packed_cache): the first start writes the file
beside (a copy of) the model, the next start maps it and serves the same greedy text; "off"
writes nothing; a value that is a file stops the start naming the key."""
import json
import shutil
import subprocess

import requests

from conftest import DATA, SERVER_BIN, Server


def greedy(server, golden):
    fox = golden["fox"]
    r = requests.post(server.url + "/v1/completions", timeout=30,
                      json={"model": "t", "prompt": fox["text"], "max_tokens": 16, "temperature": 0})
    assert r.status_code == 200, r.text
    return r.json()["choices"][0]["text"]


def test_a_restart_maps_the_cache_written_by_the_first_start(tmp_path, golden):
    model = tmp_path / "model"
    shutil.copytree(DATA / "tiny-gpt2", model, ignore=shutil.ignore_patterns(".writeup-cache"))
    cfg = {"models": [{"name": "t", "path": str(model), "weights": "int8"}]}
    texts = []
    for _ in range(2):
        # "auto" as a user has it: ctest sets WRITEUP_PACKED_CACHE=off for every other server
        s = Server("--packed-cache", "auto", config=cfg, env={"WRITEUP_PACKED_CACHE": ""})
        try:
            texts.append(greedy(s, golden))
        finally:
            assert s.stop() == 0
        files = list((model / ".writeup-cache").iterdir())
        assert len(files) == 1 and files[0].name.endswith(".packed") and "-int8-" in files[0].name, files
    assert texts[0] == texts[1]


def test_off_writes_nothing_and_a_file_is_refused(tmp_path, golden):
    model = tmp_path / "model"
    shutil.copytree(DATA / "tiny-gpt2", model, ignore=shutil.ignore_patterns(".writeup-cache"))
    s = Server(config={"models": [{"name": "t", "path": str(model), "packed_cache": "off"}]})
    try:
        assert greedy(s, golden)
    finally:
        assert s.stop() == 0
    assert not (model / ".writeup-cache").exists()
    not_a_folder = tmp_path / "file"
    not_a_folder.write_text("x")
    cfg = tmp_path / "bad.json"
    cfg.write_text(json.dumps({"models": [{"name": "t", "path": str(model), "packed_cache": str(not_a_folder)}]}))
    r = subprocess.run([SERVER_BIN, "--config", str(cfg), "--port", "0"], capture_output=True, text=True, timeout=30)
    assert r.returncode != 0
    assert "models[0].packed_cache" in r.stdout + r.stderr

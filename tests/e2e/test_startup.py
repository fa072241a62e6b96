"""Start-up detection in conftest.Server: lines before the listening line, and a server that
exits before listening."""
import os
import stat

import pytest
import requests

from conftest import SERVER_BIN, Server


def wrapper(tmp_path, body):
    path = tmp_path / "server.sh"
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return str(path)


def test_lines_before_listening_line_are_skipped(tmp_path):
    # As a Redis warning printed before the listening line did (issue 11).
    binary = wrapper(tmp_path, 'echo "[warning] redis: connection refused"\necho\n'
                               f'exec "{os.path.abspath(SERVER_BIN)}" "$@"\n')
    s = Server(binary=binary)
    try:
        assert requests.get(s.url + "/health", timeout=10).status_code == 200
        assert s.output[0].startswith("[warning] redis")
    finally:
        assert s.stop() == 0


def test_exit_before_listening_is_reported(tmp_path):
    binary = wrapper(tmp_path, 'echo "error: no models"\nexit 3\n')
    with pytest.raises(RuntimeError, match=r"exited with 3 before listening.*no models"):
        Server(binary=binary)


def test_a_model_whose_weights_failed_to_load_answers_503_and_the_others_serve(tmp_path):
    # A model directory with its config and tokenizer but no model.safetensors: the server
    # starts, /ready stays 503, that model's requests get 503 model_unavailable (not a 500: the
    # server has no bug, the operator has no weights) on every protocol, the other model serves.
    import asyncio
    import json
    import shutil

    import websockets

    from conftest import DATA

    broken = tmp_path / "no-weights"
    broken.mkdir()
    for name in ("config.json", "vocab.json", "merges.txt"):
        shutil.copy(DATA / "tiny-gpt2" / name, broken / name)
    cfg = {"models": [{"name": "tiny-gpt2", "path": str(DATA / "tiny-gpt2")},
                      {"name": "no-weights", "path": str(broken)}]}
    s = Server(config=cfg, wait_ready=False)
    try:
        body = {"model": "no-weights", "prompt": "Hello", "max_tokens": 3}
        # (A request that arrives while the load still runs waits for its end.)
        r = requests.post(s.url + "/v1/completions", json=body, timeout=30)
        assert r.status_code == 503, r.text
        assert r.json()["error"]["code"] == "model_unavailable"
        assert "no-weights" in r.json()["error"]["message"]
        assert requests.get(s.url + "/ready", timeout=5).status_code == 503
        ok = requests.post(s.url + "/v1/completions", json={**body, "model": "tiny-gpt2"}, timeout=30)
        assert ok.status_code == 200, ok.text
        url = s.ws_url + "/ws/async/writeup/text_generation/session/broken/"

        async def ask():
            async with websockets.connect(url, open_timeout=10) as ws:
                await ws.send(json.dumps({"message_type": "new_request", "prompt": "Hello", "length": 3,
                                          "batch_size": 2, "model_name": "no-weights"}))
                return json.loads(await asyncio.wait_for(ws.recv(), 30))["message"]

        m = asyncio.run(ask())
        assert m["message_type"] == "error", m
        assert m["error"]["code"] == "model_unavailable", m
        assert m["prompt"] == "Hello" and "text_1" in m and "text_2" not in m, m
    finally:
        assert s.stop() == 0

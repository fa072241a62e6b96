"""Models served with bf16 and int8 weights (models[].weights) beside float32: they load, their
fingerprints (and so cache keys) name the format, greedy completions stay close to
transformers'; a bad value stops the start naming the key."""
import json
import subprocess

import requests

from conftest import DATA, SERVER_BIN, Server


def test_bf16_and_int8_models_serve_beside_f32(golden):
    tiny = str(DATA / "tiny-gpt2")
    s = Server(config={"models": [{"name": "tiny-f32", "path": tiny},
                                  {"name": "tiny-bf16", "path": tiny, "weights": "bf16"},
                                  {"name": "tiny-int8", "path": tiny, "weights": "int8"}]})
    try:
        models = {m["id"]: m for m in requests.get(s.url + "/v1/models", timeout=10).json()["data"]}
        plain = models["tiny-f32"]["fingerprint"]
        assert models["tiny-bf16"]["fingerprint"] == plain + "-bf16"
        assert models["tiny-int8"]["fingerprint"] == plain + "-int8"
        fox = golden["fox"]
        texts = {}
        for name in ("tiny-f32", "tiny-bf16", "tiny-int8"):
            r = requests.post(s.url + "/v1/completions", timeout=30,
                              json={"model": name, "prompt": fox["text"], "max_tokens": 24, "temperature": 0})
            assert r.status_code == 200, r.text
            body = r.json()
            assert body["usage"]["completion_tokens"] == 24
            texts[name] = body["choices"][0]["text"]
        # float32 and bf16 give transformers' greedy text (weight_formats_test: all 72 golden
        # tokens for bf16); int8 keeps fox's 24 too on this build.
        assert texts["tiny-f32"] == fox["greedy_new_text"]
        assert texts["tiny-bf16"] == fox["greedy_new_text"]
        assert texts["tiny-int8"] == fox["greedy_new_text"]
    finally:
        assert s.stop() == 0


def test_a_bad_weights_value_stops_the_start(tmp_path):
    for weights, device, why in (("q4_0", "cpu", "must be f32, bf16 or int8"),
                                 ("int8", "cuda", "bf16 and int8 need device cpu")):
        cfg = tmp_path / f"{weights}.json"
        cfg.write_text(json.dumps({"models": [{"name": "t", "path": str(DATA / "tiny-gpt2"),
                                               "device": device, "weights": weights}]}))
        p = subprocess.run([SERVER_BIN, "--host", "127.0.0.1", "--port", "0", "--config", str(cfg)],
                           capture_output=True, text=True, timeout=30)
        assert p.returncode != 0
        assert f"models[0].weights: {why}" in p.stdout + p.stderr

"""POST /v1/completions: the four prompt forms, best_of, suffix, logit_bias and stream_options
(issue 13), through the real server."""
import requests

from conftest import metric
from openai_helpers import complete, stream, texts_by_index


def ok(r):
    assert r.status_code == 200, r.text
    return r.json()


def error_param(r):
    assert r.status_code == 400, r.text
    return r.json()["error"]["param"]


def test_standard_fields_at_their_defaults_are_accepted(server):
    body = ok(complete(server, {"prompt": "Defaults", "max_tokens": 3, "suffix": None, "best_of": 1,
                                "logit_bias": {}, "stream_options": None, "logprobs": None}))
    assert len(body["choices"]) == 1
    ok(complete(server, {"prompt": "Defaults", "max_tokens": 3, "suffix": "", "n": 2, "best_of": 2}))


def test_suffix_is_refused_by_name(server):
    r = complete(server, {"prompt": "x", "suffix": "the end"})
    assert error_param(r) == "suffix"
    assert "insert" in r.json()["error"]["message"]


def test_a_list_of_prompts_is_one_generation_each_indexed_as_openai_does(server):
    prompts = ["One prompt", "Another prompt here", "A third"]
    body = ok(complete(server, {"prompt": prompts, "n": 2, "max_tokens": 6, "seed": 5, "temperature": 1}))
    assert [c["index"] for c in body["choices"]] == list(range(6))
    prompt_tokens = completion_tokens = 0
    for i, p in enumerate(prompts):
        single = ok(complete(server, {"prompt": p, "n": 2, "max_tokens": 6, "seed": 5, "temperature": 1}))
        prompt_tokens += single["usage"]["prompt_tokens"]
        completion_tokens += single["usage"]["completion_tokens"]
        for j in range(2):
            assert body["choices"][i * 2 + j]["text"] == single["choices"][j]["text"]
    assert body["usage"]["prompt_tokens"] == prompt_tokens
    assert body["usage"]["completion_tokens"] == completion_tokens
    assert body["usage"]["total_tokens"] == body["usage"]["prompt_tokens"] + body["usage"]["completion_tokens"]


def test_token_id_prompts_match_their_text(server, golden):
    fox = golden["fox"]
    by_text = ok(complete(server, {"prompt": fox["text"], "max_tokens": 5, "temperature": 0}))
    by_ids = ok(complete(server, {"prompt": fox["ids"], "max_tokens": 5, "temperature": 0, "echo": True}))
    assert by_ids["choices"][0]["text"] == fox["text"] + by_text["choices"][0]["text"]
    both = ok(complete(server, {"prompt": [fox["ids"], golden["hello"]["ids"]], "max_tokens": 5, "temperature": 0}))
    assert [c["index"] for c in both["choices"]] == [0, 1]
    assert both["choices"][0]["text"] == by_text["choices"][0]["text"]
    assert both["usage"]["prompt_tokens"] == len(fox["ids"]) + len(golden["hello"]["ids"])


def test_token_ids_outside_the_vocabulary_are_refused_by_name(server):
    assert error_param(complete(server, {"prompt": [464, 50257]})) == "prompt"
    assert error_param(complete(server, {"prompt": [[464], [99999]]})) == "prompt"
    assert error_param(complete(server, {"prompt": "x", "logit_bias": {"50257": 1}})) == "logit_bias"
    assert error_param(complete(server, {"prompt": [1, "a"]})) == "prompt"


def test_the_number_of_prompts_is_bounded(server):
    assert error_param(complete(server, {"prompt": ["p"] * 33, "max_tokens": 1})) == "prompt"
    body = ok(complete(server, {"prompt": ["p"] * 20, "max_tokens": 1}))  # LangChain's batch size
    assert len(body["choices"]) == 20


def test_streamed_prompt_arrays_interleave_with_their_indexes(server):
    body = {"prompt": ["Stream one", "Stream two"], "n": 2, "max_tokens": 6, "seed": 9, "temperature": 1}
    whole = ok(complete(server, body))
    r, events, done = stream(server, body)
    assert r.status_code == 200 and done
    texts = texts_by_index(events)
    assert sorted(texts) == [0, 1, 2, 3]
    for c in whole["choices"]:
        assert texts[c["index"]] == c["text"]
    finishes = [ch["index"] for e in events for ch in e["choices"] if ch["finish_reason"]]
    assert sorted(finishes) == [0, 1, 2, 3]


def test_best_of_returns_the_candidates_with_the_highest_mean_logprob(server):
    base = {"prompt": "Best of", "max_tokens": 8, "seed": 21, "temperature": 1}
    # The same seed: sequence i of both requests draws from the same generator.
    candidates = ok(complete(server, {**base, "n": 4, "logprobs": 0}))
    means = []
    for c in candidates["choices"]:
        v = c["logprobs"]["token_logprobs"]
        means.append(sum(v) / len(v) if v else float("-inf"))
    order = sorted(range(4), key=lambda i: -means[i])
    best = ok(complete(server, {**base, "n": 2, "best_of": 4}))
    assert [c["text"] for c in best["choices"]] == [candidates["choices"][i]["text"] for i in order[:2]]
    assert [c["index"] for c in best["choices"]] == [0, 1]
    assert best["usage"]["completion_tokens"] == candidates["usage"]["completion_tokens"]  # all 4 count


def test_best_of_cannot_stream(server):
    r = requests.post(server.url + "/v1/completions", json={"prompt": "x", "best_of": 2, "stream": True}, timeout=30)
    assert error_param(r) == "best_of"
    assert error_param(complete(server, {"prompt": "x", "n": 3, "best_of": 2})) == "best_of"


def test_logit_bias_changes_the_cache_key(server):
    body = {"prompt": "Bias and the cache", "max_tokens": 4, "temperature": 0}
    ok(complete(server, body))
    hits = metric(server, "writeup_cache_hits_total")
    ok(complete(server, body))
    assert metric(server, "writeup_cache_hits_total") == hits + 1
    ok(complete(server, {**body, "logit_bias": {"13": 5}}))
    assert metric(server, "writeup_cache_hits_total") == hits + 1  # a different key: generated


def test_logit_bias_of_100_forces_the_token(server):
    body = ok(complete(server, {"prompt": "Forced", "max_tokens": 5, "temperature": 0, "logprobs": 0,
                                "logit_bias": {"13": 100}}))
    assert body["choices"][0]["text"] == "....."


def test_include_usage_ends_the_stream_with_a_usage_chunk(server):
    body = {"prompt": ["Usage one", "Usage two"], "max_tokens": 5, "temperature": 0}
    whole = ok(complete(server, body))
    r, events, done = stream(server, {**body, "stream_options": {"include_usage": True}})
    assert r.status_code == 200 and done
    assert all("usage" in e for e in events)
    assert all(e["usage"] is None for e in events[:-1])
    assert events[-1]["choices"] == []
    assert events[-1]["usage"] == whole["usage"]
    r, events, done = stream(server, {**body, "stream_options": {"include_usage": False}})
    assert done and all("usage" not in e for e in events)


def test_stream_options_need_stream(server):
    assert error_param(complete(server, {"prompt": "x", "stream_options": {"include_usage": True}})) == "stream_options"

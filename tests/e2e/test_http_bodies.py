"""One rule for request bodies on every route (issue 13, HTTP details): JSON, a form,
multipart/form-data, and 415 for any other Content-Type."""
import json

import requests

from conftest import DATA


def fields_of(r):
    assert r.status_code == 200, r.text
    return r.json()


def test_json_form_and_multipart_give_the_same_completion(server):
    fields = {"prompt": "Once upon a time", "max_tokens": 6, "temperature": 0.8, "seed": 11, "n": 2,
              "stop": ["\n\n"], "echo": False}
    url = server.url + "/v1/completions"
    a = fields_of(requests.post(url, json=fields))
    form = {k: (json.dumps(v) if isinstance(v, list) else str(v).lower() if isinstance(v, bool) else str(v))
            for k, v in fields.items()}
    b = fields_of(requests.post(url, data=form))
    c = fields_of(requests.post(url, files={k: (None, v) for k, v in form.items()}))  # multipart, text parts
    texts = [[ch["text"] for ch in x["choices"]] for x in (a, b, c)]
    assert texts[0] == texts[1] == texts[2]
    assert len(texts[0]) == 2


def test_curl_style_json_labelled_as_a_form_is_json(server):
    r = requests.post(server.url + "/v1/completions", data='{"prompt":"Hello","max_tokens":2}',
                      headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert r.status_code == 200, r.text


def test_no_content_type_json_and_form(server):
    r = requests.post(server.url + "/v1/tokenize", data=b'{"prompt":"Hello world"}')
    assert fields_of(r)["count"] == 2
    r = requests.post(server.url + "/v1/tokenize", data=b"prompt=Hello+world")
    assert fields_of(r)["count"] == 2


def test_tokenize_detokenize_and_generate_take_forms_and_multipart(server):
    case = json.loads((DATA / "dev_tokens.json").read_text())["cases"][5]
    ids = fields_of(requests.post(server.url + "/v1/tokenize", files={"prompt": (None, case["text"])}))["tokens"]
    assert ids == case["ids"]
    for tokens in (json.dumps(case["ids"]), ",".join(map(str, case["ids"]))):
        assert fields_of(requests.post(server.url + "/v1/detokenize", data={"tokens": tokens}))["text"] == case["text"]
        assert fields_of(requests.post(server.url + "/v1/detokenize", files={"tokens": (None, tokens)}))["text"] == case["text"]
    fields = {"prompt": "Hello world", "length": "5", "batch_size": "2", "seed": "3"}
    a = fields_of(requests.post(server.url + "/v1/generate", files={k: (None, v) for k, v in fields.items()}))
    b = fields_of(requests.post(server.url + "/tiny-gpt2", data=fields))
    assert a["message"]["text_0"] == b["message"]["text_0"]


def test_chat_takes_a_form_too(server):
    msgs = json.dumps([{"role": "user", "content": "Hi"}])
    r = requests.post(server.url + "/v1/chat/completions",
                      data={"messages": msgs, "max_tokens": "3", "temperature": "0", "stream": "false"})
    assert fields_of(r)["object"] == "chat.completion"


def test_other_content_types_are_415_naming_them(server):
    for path in ("/v1/completions", "/v1/chat/completions", "/v1/generate", "/tiny-gpt2", "/v1/tokenize",
                 "/v1/detokenize"):
        r = requests.post(server.url + path, data=b"prompt=hi", headers={"Content-Type": "text/csv"})
        assert r.status_code == 415, (path, r.text)
        err = r.json()["error"]
        assert "text/csv" in err["message"]
        assert err["code"] == "unsupported_media_type"


def test_multipart_problems_are_400_naming_them(server):
    url = server.url + "/v1/completions"
    r = requests.post(url, files={"prompt": ("story.txt", b"Once", "text/plain")})
    assert r.status_code == 400 and "file" in r.json()["error"]["message"]
    r = requests.post(url, data=b"--B\r\nContent-Disposition: form-data; name=\"prompt\"\r\n\r\nno end",
                      headers={"Content-Type": "multipart/form-data; boundary=B"})
    assert r.status_code == 400 and "closing boundary" in r.json()["error"]["message"]
    r = requests.post(url, data=b"x", headers={"Content-Type": "multipart/form-data"})
    assert r.status_code == 400 and "boundary" in r.json()["error"]["message"]
    assert requests.get(server.url + "/health").status_code == 200

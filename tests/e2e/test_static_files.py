"""The editor page's files (issue 14): served at / with their types, a year's caching for hashed
assets and revalidation (ETag, 304) for the rest, index.html for the page's own routes, no API key
for the page, and the built bundle found without configuration ("static_dir": "auto")."""
import pathlib
import shutil
import tempfile

import requests

from conftest import SERVER_BIN, Server, config

ASSET = "/assets/index-B4x_9kQz.js"


def site(root):
    (root / "assets").mkdir(parents=True)
    (root / "index.html").write_text("<!doctype html><title>writeup</title>")
    (root / ASSET.lstrip("/")).write_text("console.log('editor')")
    (root / "robots.txt").write_text("User-agent: *\n")
    return root


def test_types_caching_revalidation_and_page_routes():
    with tempfile.TemporaryDirectory() as d:
        root = site(pathlib.Path(d) / "web")
        s = Server(config=config(server={"static_dir": str(root)}))
        try:
            page = requests.get(s.url + "/", timeout=10)
            assert page.status_code == 200 and page.text.startswith("<!doctype html>")
            assert page.headers["Content-Type"] == "text/html; charset=utf-8"
            assert page.headers["Cache-Control"] == "no-cache"
            assert page.headers["X-Content-Type-Options"] == "nosniff"
            etag = page.headers["ETag"]
            again = requests.get(s.url + "/", headers={"If-None-Match": etag}, timeout=10)
            assert again.status_code == 304 and again.content == b"" and again.headers["ETag"] == etag
            assert requests.get(s.url + "/", headers={"If-None-Match": '"other"'}, timeout=10).status_code == 200

            js = requests.get(s.url + ASSET, timeout=10)
            assert js.status_code == 200 and js.text == "console.log('editor')"
            assert js.headers["Content-Type"] == "text/javascript; charset=utf-8"
            assert js.headers["Cache-Control"] == "public, max-age=31536000, immutable"
            head = requests.head(s.url + ASSET, timeout=10)
            assert head.status_code == 200 and head.content == b""
            assert int(head.headers["Content-Length"]) == len(js.content)
            assert requests.get(s.url + "/robots.txt", timeout=10).headers["Content-Type"].startswith("text/plain")

            # The page's own routes get the page (not cached: a new build changes it) ...
            for route in ("/settings", "/doc/42/", "/write?draft=1"):
                r = requests.get(s.url + route, timeout=10)
                assert r.status_code == 200 and r.text == page.text, route
                assert r.headers["Cache-Control"] == "no-cache", route
            # ... a missing file, or any path the API owns, a JSON 404.
            for missing in ("/assets/index-00000000.js", "/favicon.ico", "/v1/nope", "/ws/x"):
                r = requests.get(s.url + missing, timeout=10)
                assert r.status_code == 404, missing
                assert r.json()["error"]["code"] == "not_found", missing
            assert requests.get(s.url + "/health", timeout=10).json() == {"status": "ok"}
        finally:
            s.stop()


def test_the_page_needs_no_api_key_but_the_api_does():
    with tempfile.TemporaryDirectory() as d:
        root = site(pathlib.Path(d) / "web")
        s = Server(config=config(server={"static_dir": str(root), "api_keys": ["k-123"]}))
        try:
            assert requests.get(s.url + "/", timeout=10).status_code == 200
            assert requests.get(s.url + ASSET, timeout=10).status_code == 200
            assert requests.get(s.url + "/v1/models", timeout=10).status_code == 401
            ok = requests.get(s.url + "/v1/models", headers={"Authorization": "Bearer k-123"}, timeout=10)
            assert ok.status_code == 200
        finally:
            s.stop()


def test_auto_finds_the_bundle_beside_the_binary_and_none_means_none():
    with tempfile.TemporaryDirectory() as d:
        bin_dir = pathlib.Path(d) / "bin"
        bin_dir.mkdir()
        binary = bin_dir / "writeup-server"
        shutil.copy2(SERVER_BIN, binary)
        site(bin_dir / "web")
        s = Server(config=config(server={"static_dir": "auto"}), binary=str(binary))
        try:
            r = requests.get(s.url + "/", timeout=10)
            assert r.status_code == 200 and "<title>writeup</title>" in r.text
            assert any("page at http://" in line for line in s.output), s.output
        finally:
            s.stop()
        # The same binary told to serve no files answers / with a 404.
        s = Server(config=config(server={"static_dir": None}), binary=str(binary))
        try:
            assert requests.get(s.url + "/", timeout=10).status_code == 404
        finally:
            s.stop()

"""Helpers for the deployment tests (a module of its own: tests/e2e has a conftest too): paths, free ports, tools, the writeup-server binary,
and a fake Hugging Face hub (the hub's URL layout and API JSON, on loopback)."""
import hashlib
import http.server
import json
import os
import pathlib
import shutil
import socket
import threading
import urllib.parse

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
DATA = ROOT / "tests" / "data"
TINY = DATA / "tiny-gpt2"
SERVER_BIN = os.environ.get("WRITEUP_SERVER_BIN", str(ROOT / "build" / "writeup-server"))


def need_tool(name):
    """The path of a tool the tests need; a missing one fails the test (never a skip):
    scripts/install-deps.sh installs every one of them."""
    path = shutil.which(name) or next(
        (p for p in (f"/usr/sbin/{name}", f"/usr/bin/{name}") if os.access(p, os.X_OK)), None)
    if not path:
        pytest.fail(f"{name} is not installed: run scripts/install-deps.sh")
    return path


def server_bin():
    if not os.access(SERVER_BIN, os.X_OK):
        pytest.fail(f"no writeup-server at {SERVER_BIN}: build it, or set WRITEUP_SERVER_BIN")
    return SERVER_BIN


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ----------------------------------------------------------------------------- fake hub

COMMIT = "0123456789abcdef0123456789abcdef01234567"
LFS_FILES = {"model.safetensors"}


def git_blob_sha1(data):
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


class FakeHub:
    """Serves every repo id with the files of a model directory, in the hub's layout:
      GET /api/models/{repo}/revision/{rev}   {"id","sha","siblings":[{rfilename,blobId,size,lfs}]}
      GET /{repo}/resolve/{rev}/{file}        non-LFS: 200 + ETag (git blob sha1);
                                              LFS: 302 to /cdn/... with X-Linked-Etag (sha256),
                                              X-Linked-Size, X-Repo-Commit
      GET /cdn/{sha256}                       the bytes, with Range support
    Knobs (set by a test): cut_once = {file: bytes} sends the full Content-Length but closes
    after that many bytes, once per file; corrupt = {file} serves one flipped byte;
    blobs_in_api = False answers the API without sizes/lfs (headers carry the sha256);
    token = "..." requires that Bearer token on the endpoint's host; cdn_host puts the CDN on
    another host name (localhost) so that forwarding the token there can be seen."""

    def __init__(self, model_dir=TINY):
        self.files = {p.name: p.read_bytes() for p in sorted(model_dir.iterdir()) if p.is_file()}
        self.cut_once = {}
        self.corrupt = set()
        self.blobs_in_api = True
        self.token = None
        self.cdn_host = None
        self.repos = None          # None: any repo id exists
        self.log = []              # (method, path, headers dict)
        self.lock = threading.Lock()
        hub = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def do_HEAD(self):
                self.handle_any(head=True)

            def do_GET(self):
                self.handle_any(head=False)

            def handle_any(self, head):
                with hub.lock:
                    hub.log.append((self.command, self.path, dict(self.headers)))
                url = urllib.parse.urlsplit(self.path)
                path = urllib.parse.unquote(url.path)
                if path.startswith("/cdn/"):
                    return self.serve_cdn(path[len("/cdn/"):], head)
                if hub.token and self.headers.get("Authorization") != f"Bearer {hub.token}":
                    return self.reply(401, b'{"error":"Invalid credentials"}', head=head)
                if path.startswith("/api/models/"):
                    repo, sep, rev = path[len("/api/models/"):].partition("/revision/")
                    if not sep or not hub.known(repo):
                        return self.reply(404, b'{"error":"Repository not found"}', head=head)
                    return self.reply(200, json.dumps(hub.api(repo)).encode(), head=head,
                                      ctype="application/json")
                parts = path.lstrip("/").split("/")
                if len(parts) >= 4 and "resolve" in parts:
                    i = parts.index("resolve")
                    repo, fname = "/".join(parts[:i]), "/".join(parts[i + 2:])
                    if not hub.known(repo) or fname not in hub.files:
                        return self.reply(404, b"Entry not found", head=head)
                    data = hub.files[fname]
                    if fname in LFS_FILES:
                        sha = hashlib.sha256(data).hexdigest()
                        host = hub.cdn_host or self.headers.get("Host")
                        self.send_response(302)
                        self.send_header("Location", f"http://{host}/cdn/{fname}?sha={sha}")
                        self.send_header("X-Linked-Etag", f'"{sha}"')
                        self.send_header("X-Linked-Size", str(len(data)))
                        self.send_header("X-Repo-Commit", COMMIT)
                        self.send_header("ETag", f'"{git_blob_sha1(data)}"')
                        self.send_header("Content-Length", "0")
                        self.end_headers()
                        return
                    return self.reply(200, data, head=head, etag=git_blob_sha1(data))
                return self.reply(404, b"not found", head=head)

            def serve_cdn(self, fname, head):
                fname = fname.split("?")[0]
                data = hub.files.get(fname)
                if data is None:
                    return self.reply(404, b"", head=head)
                if fname in hub.corrupt:
                    data = bytes([data[0] ^ 0xFF]) + data[1:]
                start = 0
                rng = self.headers.get("Range")
                if rng and rng.startswith("bytes="):
                    start = int(rng[len("bytes="):].split("-")[0])
                    if start >= len(data):
                        self.send_response(416)
                        self.send_header("Content-Range", f"bytes */{len(data)}")
                        self.send_header("Content-Length", "0")
                        self.end_headers()
                        return
                body = data[start:]
                self.send_response(206 if start else 200)
                if start:
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                self.send_header("Accept-Ranges", "bytes")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if head:
                    return
                with hub.lock:
                    cut = hub.cut_once.pop(fname, None)
                if cut is not None and cut < len(body):
                    self.wfile.write(body[:cut])
                    self.wfile.flush()
                    self.close_connection = True
                    self.connection.shutdown(socket.SHUT_RDWR)
                    return
                self.wfile.write(body)

            def reply(self, code, body, head=False, ctype="application/octet-stream", etag=None):
                self.send_response(code)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.send_header("X-Repo-Commit", COMMIT)
                if etag:
                    self.send_header("ETag", f'"{etag}"')
                self.end_headers()
                if not head:
                    self.wfile.write(body)

        class Server(http.server.ThreadingHTTPServer):
            def handle_error(self, request, client_address):
                pass                       # a connection cut on purpose is not news

        self.httpd = Server(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def known(self, repo):
        return self.repos is None or repo in self.repos

    def api(self, repo):
        siblings = []
        for name, data in self.files.items():
            s = {"rfilename": name}
            if self.blobs_in_api:
                s["size"] = len(data)
                s["blobId"] = git_blob_sha1(data)
                if name in LFS_FILES:
                    s["lfs"] = {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data),
                                "pointerSize": 134}
            siblings.append(s)
        return {"id": repo, "modelId": repo, "sha": COMMIT, "private": False,
                "siblings": siblings}

    def requests(self, prefix):
        with self.lock:
            return [(m, p, h) for m, p, h in self.log if p.startswith(prefix)]

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


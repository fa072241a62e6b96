"""Scale-out on one machine: two writeup-server instances sharing one redis-server, behind nginx
routing by path prefix (as the Kubernetes Ingress and the original writeup.ai load balancer do):
  POST /tiny-gpt2            -> an instance's POST /tiny-gpt2 (the original's model-service call)
  /tiny-gpt2/...             -> the same path without the prefix (/v1/completions, /ws/async/...)
Every process is a plain child of the test on free loopback ports; nothing is left running."""
import asyncio
import json
import re
import signal
import socket
import subprocess
import time
import uuid

import pytest
import requests
import websockets

from deploy_support import TINY, free_port, need_tool, server_bin

WS_PATH = "/ws/async/writeup/text_generation/session/{}/"

NGINX_CONF = """
daemon off;
worker_processes 1;
pid {d}/nginx.pid;
error_log {d}/error.log warn;
events {{ worker_connections 512; }}
http {{
  log_format upstream '$request_method $request_uri $status up=$upstream_addr ups=$upstream_status';
  access_log {d}/access.log upstream;
  client_body_temp_path {d}/body;
  proxy_temp_path {d}/proxy;
  fastcgi_temp_path {d}/fastcgi;
  uwsgi_temp_path {d}/uwsgi;
  scgi_temp_path {d}/scgi;

  # WebSocket: pass the client's Upgrade on, and Connection: upgrade only when it asked.
  map $http_upgrade $connection_upgrade {{
    default upgrade;
    ''      '';
  }}

  upstream writeup_tiny {{
    server 127.0.0.1:{a} max_fails=1 fail_timeout=30s;
    server 127.0.0.1:{b} max_fails=1 fail_timeout=30s;
    keepalive 8;
  }}

  server {{
    listen 127.0.0.1:{port};
    proxy_http_version 1.1;
    proxy_set_header Host $host;
    proxy_set_header Upgrade $http_upgrade;
    proxy_set_header Connection $connection_upgrade;
    proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
    proxy_buffering off;                 # server-sent events stream through
    proxy_read_timeout 300s;             # long generations and idle editor sockets
    # A dead or unready instance (connect refused, 502, 503 from /ready-less workers) is
    # skipped: the request goes to the next one, so clients see no failure.
    proxy_next_upstream error timeout http_502 http_503 non_idempotent;
    proxy_next_upstream_tries 2;
    add_header X-Upstream $upstream_addr always;

    location = /tiny-gpt2 {{ proxy_pass http://writeup_tiny; }}
    location /tiny-gpt2/  {{ proxy_pass http://writeup_tiny/; }}
    location / {{
      default_type application/json;
      return 404 '{{"error":{{"message":"no model group at this path","type":"invalid_request_error","param":null,"code":"not_found"}}}}';
    }}
  }}
}}
"""


def wait_port(port, proc, what, timeout=20):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"{what} never listened on {port}")


class Instance:
    def __init__(self, redis_port):
        self.proc = subprocess.Popen(
            [server_bin(), "--host", "127.0.0.1", "--port", "0", "--log-level", "warn",
             "--model", f"tiny-gpt2={TINY}", "--redis", f"redis://127.0.0.1:{redis_port}/0",
             "--packed-cache", "off"],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        line = self.proc.stdout.readline()
        if "listening on" not in line:
            self.proc.kill()
            raise RuntimeError(f"writeup-server did not start: {line!r}")
        self.url = line.split()[-1]
        self.port = int(self.url.rsplit(":", 1)[1])
        deadline = time.time() + 30
        while requests.get(self.url + "/ready", timeout=5).status_code != 200:
            assert time.time() < deadline, "never ready"
            time.sleep(0.05)

    def metric_sum(self, name):
        text = requests.get(self.url + "/metrics", timeout=5).text
        return sum(float(m.group(1)) for m in
                   re.finditer(rf"^{name}(?:\{{[^}}]*\}})? (\S+)$", text, re.M))

    def stop(self, sig=signal.SIGTERM):
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


class Cluster:
    def __init__(self, tmp):
        self.tmp = tmp
        self.procs = []
        self.redis_port = free_port()
        self.redis = subprocess.Popen(
            [need_tool("redis-server"), "--port", str(self.redis_port), "--bind", "127.0.0.1",
             "--save", "", "--appendonly", "no", "--dir", str(tmp)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_port(self.redis_port, self.redis, "redis-server")
        self.a = Instance(self.redis_port)
        self.b = Instance(self.redis_port)
        self.port = free_port()
        conf = tmp / "nginx.conf"
        conf.write_text(NGINX_CONF.format(d=tmp, a=self.a.port, b=self.b.port, port=self.port))
        nginx = need_tool("nginx")
        check = subprocess.run([nginx, "-t", "-p", str(tmp), "-c", str(conf)], capture_output=True, text=True)
        assert check.returncode == 0, check.stderr
        self.nginx = subprocess.Popen([nginx, "-p", str(tmp), "-c", str(conf)],
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_port(self.port, self.nginx, "nginx")
        self.url = f"http://127.0.0.1:{self.port}"
        self.ws = f"ws://127.0.0.1:{self.port}"

    def redis_cmd(self, *args):
        cmd = b"*%d\r\n" % len(args) + b"".join(b"$%d\r\n%s\r\n" % (len(a), a.encode()) for a in args)
        with socket.create_connection(("127.0.0.1", self.redis_port), 5) as s:
            s.sendall(cmd)
            return s.recv(65536)

    def instance(self, upstream_addr):
        return {f"127.0.0.1:{self.a.port}": "a", f"127.0.0.1:{self.b.port}": "b"}[upstream_addr]

    def close(self):
        self.a.stop()
        self.b.stop()
        for p in (self.nginx, self.redis):
            if p.poll() is None:
                p.send_signal(signal.SIGQUIT if p is self.nginx else signal.SIGTERM)
                try:
                    p.wait(10)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    c = Cluster(tmp_path_factory.mktemp("scale"))
    yield c
    c.close()


def ws_request(base, prompt, seed=42, **kw):
    msg = {"message_type": "new_request", "prompt": prompt, "temperature": 0.7, "top_k": 10,
           "top_p": 0, "length": 24, "batch_size": 3, "model_name": "tiny-gpt2", "seed": seed, **kw}

    async def go():
        async with websockets.connect(base + WS_PATH.format(uuid.uuid4())) as ws:
            await ws.send(json.dumps(msg))
            frames = []
            while True:
                f = json.loads(await asyncio.wait_for(ws.recv(), 30))["message"]
                frames.append(f)
                if f["message_type"] != "updated_response":
                    return frames
    return asyncio.run(go())


def texts(frame):
    return [frame[f"text_{i}"] for i in range(frame.get("batch_size", 3)) if f"text_{i}" in frame]


def completion(base, prompt, seed=7, **kw):
    r = requests.post(base + "/v1/completions", timeout=30,
                      json={"model": "tiny-gpt2", "prompt": prompt, "max_tokens": 12,
                            "temperature": 0.8, "seed": seed, "n": 2, **kw})
    assert r.status_code == 200, r.text
    return r


def test_http_routes_through_nginx(cluster):
    r = completion(cluster.url + "/tiny-gpt2", "Routed by path prefix")
    body = r.json()
    assert body["object"] == "text_completion" and len(body["choices"]) == 2
    assert r.headers["X-Upstream"] in (f"127.0.0.1:{cluster.a.port}", f"127.0.0.1:{cluster.b.port}")

    r = requests.post(cluster.url + "/tiny-gpt2", timeout=30,
                      data={"prompt": "The original load balancer", "length": "8", "batch_size": "2"})
    assert r.status_code == 200 and r.json()["message"]["message_type"] == "completed_response"

    r = requests.post(cluster.url + "/tiny-gpt2/v1/completions", timeout=30, stream=True,
                      json={"prompt": "Streaming through nginx", "max_tokens": 8, "stream": True})
    lines = [l for l in r.iter_lines(decode_unicode=True) if l]
    assert r.headers["Content-Type"].startswith("text/event-stream")
    assert lines[-1] == "data: [DONE]" and len(lines) >= 2

    assert requests.get(cluster.url + "/tiny-gpt2/ready", timeout=5).status_code == 200
    r = requests.post(cluster.url + "/no-such-group/v1/completions", json={"prompt": "x"}, timeout=5)
    assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"


def test_websocket_through_nginx(cluster):
    frames = ws_request(cluster.ws + "/tiny-gpt2", "The editor speaks through nginx")
    assert frames[-1]["message_type"] == "completed_response"
    assert all(f["prompt"] == "The editor speaks through nginx" for f in frames)
    assert len(texts(frames[-1])) == 3
    log = (cluster.tmp / "access.log").read_text()
    assert re.search(r"^GET /tiny-gpt2/ws/async/writeup/text_generation/session/\S+ 101 ", log, re.M), log


def test_seeded_requests_give_the_same_text_on_either_instance(cluster):
    # WebSocket, straight to each instance; the shared cache is emptied in between so that the
    # second instance generates rather than reads the first one's answer.
    a = ws_request(cluster.a.url.replace("http", "ws"), "Same seed, same words", seed=1234)
    cluster.redis_cmd("FLUSHALL")
    b = ws_request(cluster.b.url.replace("http", "ws"), "Same seed, same words", seed=1234)
    assert texts(a[-1]) == texts(b[-1]) and all(texts(a[-1]))

    # HTTP through nginx: round robin sends the two requests to different instances.
    cluster.redis_cmd("FLUSHALL")
    r1 = completion(cluster.url + "/tiny-gpt2", "Either instance answers", seed=99)
    cluster.redis_cmd("FLUSHALL")
    r2 = completion(cluster.url + "/tiny-gpt2", "Either instance answers", seed=99)
    assert cluster.instance(r1.headers["X-Upstream"]) != cluster.instance(r2.headers["X-Upstream"])
    assert [c["text"] for c in r1.json()["choices"]] == [c["text"] for c in r2.json()["choices"]]


def test_repeated_request_is_a_cache_hit_on_the_other_instance(cluster):
    prompt = f"Cached across instances {uuid.uuid4().hex[:8]}"
    first = ws_request(cluster.a.url.replace("http", "ws"), prompt, seed=5)
    assert first[-1]["message_type"] == "completed_response"
    key = first[-1].get("cache_key")
    assert key, f"frames carry no cache_key: {first[-1]}"

    hits = cluster.b.metric_sum("writeup_cache_hits_total")
    again = ws_request(cluster.b.url.replace("http", "ws"), prompt, seed=5)
    # a hit answers with one completed_response holding the stored texts
    assert [f["message_type"] for f in again] == ["completed_response"]
    assert again[-1]["cache_key"] == key
    assert texts(again[-1]) == texts(first[-1])
    assert cluster.b.metric_sum("writeup_cache_hits_total") >= hits + 1


def test_killing_one_instance_fails_no_request(cluster):
    # warm both so that each holds pooled keepalive connections from nginx
    for i in range(4):
        completion(cluster.url + "/tiny-gpt2", f"warm {i}")
    dead = cluster.a
    dead.proc.kill()                          # no goodbye: as a crashed pod or VM
    dead.proc.wait()
    served = []
    for i in range(8):
        r = completion(cluster.url + "/tiny-gpt2", f"after the kill {i}", seed=i)
        served.append(cluster.instance(r.headers["X-Upstream"].split(", ")[-1]))
        frames = ws_request(cluster.ws + "/tiny-gpt2", f"editor after the kill {i}", seed=i)
        assert frames[-1]["message_type"] == "completed_response"
    assert served == ["b"] * 8
    errors = (cluster.tmp / "error.log").read_text()
    assert f"127.0.0.1:{dead.port}" in errors     # nginx saw it fail and took it out
    assert "upstream server temporarily disabled" in errors

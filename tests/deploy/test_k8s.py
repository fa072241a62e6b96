"""docker/k8s: `kubectl apply --dry-run=client` needs a cluster's API discovery, so the manifests
are checked structurally with python3-yaml: the kinds' required fields, every cross-reference
(selectors, ports, ConfigMap keys, claims, HPA targets, Ingress backends), the path routing
against each group's models (the editor's WebSocket reaches a group serving every model name the
editor sends), and each group's server config started by the real writeup-server (with the tiny
model in place of the weights) to prove the server accepts every key, exports the metric the
HPAs scale on and answers every editor model name on one WebSocket."""
import asyncio
import json
import re
import subprocess
import time

import pytest
import requests
import websockets
import yaml

from deploy_support import ROOT, TINY, server_bin

K8S = ROOT / "docker" / "k8s"
API = {"Namespace": "v1", "ConfigMap": "v1", "Service": "v1", "PersistentVolumeClaim": "v1",
       "Deployment": "apps/v1", "Job": "batch/v1", "Ingress": "networking.k8s.io/v1",
       "HorizontalPodAutoscaler": "autoscaling/v2"}
DNS1123 = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
# Every model name the original writeup.ai editor sends or has a constant for (issue 13).
EDITOR_MODELS = ["gpt2", "gpt2-medium", "gpt2-large", "gpt2-medium-hp", "gpt2-medium-research",
                 "gpt2-medium-companies", "gpt2-medium-legal", "gpt2-medium-got", "gpt2-medium-lyrics"]
EDITOR_SOCKET = "/ws/async/writeup/text_generation/session/3f0c6d9e-8a4b-4c1e-9d2f-editor/"


@pytest.fixture(scope="module")
def docs():
    kust = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    files = sorted(p.name for p in K8S.glob("*.yaml") if p.name != "kustomization.yaml")
    assert sorted(kust["resources"]) == files, "kustomization.yaml must list every manifest"
    assert kust["namespace"] == "writeup"
    out = []
    for name in kust["resources"]:
        for d in yaml.safe_load_all((K8S / name).read_text()):
            if d is not None:
                out.append(d)
    return out


def of(docs, kind):
    return {d["metadata"]["name"]: d for d in docs if d["kind"] == kind}


def test_every_document_is_well_formed(docs):
    seen = set()
    for d in docs:
        assert d["kind"] in API, d["kind"]
        assert d["apiVersion"] == API[d["kind"]], (d["kind"], d["apiVersion"])
        name = d["metadata"]["name"]
        assert DNS1123.match(name) and len(name) <= 63, name
        assert (d["kind"], name) not in seen, f"duplicate {d['kind']}/{name}"
        seen.add((d["kind"], name))
        assert "namespace" not in d["metadata"]      # kustomize sets it
        for k, v in d["metadata"].get("labels", {}).items():
            assert isinstance(v, str), (name, k)


def pod_specs(docs):
    for kind in ("Deployment", "Job"):
        for name, d in of(docs, kind).items():
            yield kind, name, d["spec"]["template"]


def test_pods_reference_what_exists(docs):
    configmaps, claims = of(docs, "ConfigMap"), of(docs, "PersistentVolumeClaim")
    for kind, name, tpl in pod_specs(docs):
        spec = tpl["spec"]
        assert spec["securityContext"]["runAsNonRoot"] is True, name
        volumes = {v["name"]: v for v in spec["volumes"]}
        for c in spec["containers"]:
            ports = {p["name"]: p["containerPort"] for p in c.get("ports", [])}
            for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
                port = c.get(probe, {}).get("httpGet", {}).get("port")
                if port is not None:
                    assert port in ports or port in ports.values(), (name, probe)
            for m in c.get("volumeMounts", []):
                v = volumes[m["name"]]
                if "configMap" in v:
                    cm = configmaps[v["configMap"]["name"]]
                    if "subPath" in m:
                        assert m["subPath"] in cm["data"], (name, m["subPath"])
                if "persistentVolumeClaim" in v:
                    assert v["persistentVolumeClaim"]["claimName"] in claims
        if kind == "Deployment":
            d = of(docs, "Deployment")[name]
            sel = d["spec"]["selector"]["matchLabels"]
            assert sel.items() <= tpl["metadata"]["labels"].items(), name


def test_server_pods_probe_ready_and_health(docs):
    servers = {n: d for n, d in of(docs, "Deployment").items() if n.startswith("writeup-")}
    assert set(servers) == {"writeup-server"}   # one group: every model on each pod's GPU
    for name, d in servers.items():
        c = d["spec"]["template"]["spec"]["containers"][0]
        assert c["readinessProbe"]["httpGet"]["path"] == "/ready"
        assert c["livenessProbe"]["httpGet"]["path"] == "/health"
        assert c["args"] == ["--config", "/etc/writeup/server.json"]
        assert c["resources"]["limits"]["nvidia.com/gpu"] == 1
        assert c["image"].startswith("writeup-server:")
        ann = d["spec"]["template"]["metadata"]["annotations"]
        assert ann["prometheus.io/scrape"] == "true" and ann["prometheus.io/path"] == "/metrics"


def service_backends(docs):
    """Service name -> (its port names, the Deployment whose pods it selects)."""
    deployments = of(docs, "Deployment")
    out = {}
    for name, s in of(docs, "Service").items():
        sel = s["spec"]["selector"]
        pods = [n for n, d in deployments.items()
                if sel.items() <= d["spec"]["template"]["metadata"]["labels"].items()]
        assert len(pods) == 1, f"service {name} selects {pods}"
        c_ports = {p["name"] for c in deployments[pods[0]]["spec"]["template"]["spec"]["containers"]
                   for p in c.get("ports", [])}
        for p in s["spec"]["ports"]:
            assert p["targetPort"] in c_ports, (name, p)
        out[name] = ({p["name"] for p in s["spec"]["ports"]}, pods[0])
    return out


def group_configs(docs):
    """Deployment name -> its server config (the ConfigMap key it mounts)."""
    cm = of(docs, "ConfigMap")["writeup-config"]["data"]
    out = {}
    for name, d in of(docs, "Deployment").items():
        for m in d["spec"]["template"]["spec"]["containers"][0].get("volumeMounts", []):
            if m["mountPath"] == "/etc/writeup/server.json":
                out[name] = json.loads(cm[m["subPath"]])
    return out


def names_of(config):
    """Every name a config's models answer to: names and aliases."""
    return {n for m in config["models"] for n in [m["name"], *m.get("aliases", [])]}


def ingress_routes(docs):
    """Ingress path -> the Deployment behind it."""
    services = service_backends(docs)
    ing = of(docs, "Ingress")["writeup"]
    routes = {}
    for rule in ing["spec"]["rules"]:
        for p in rule["http"]["paths"]:
            svc = p["backend"]["service"]
            assert svc["name"] in services and svc["port"]["name"] in services[svc["name"]][0]
            assert p["pathType"] == "ImplementationSpecific"       # regex paths (use-regex)
            routes[p["path"]] = services[svc["name"]][1]
    return routes


def routed_to(routes, path):
    """The Deployment ingress-nginx sends `path` to: its regex locations are tried longest
    first (the annotation use-regex orders them so), the first match wins."""
    for pattern in sorted(routes, key=len, reverse=True):
        if re.match(pattern, path, re.I):
            return routes[pattern]
    return None


def test_ingress_routes_every_model_to_its_group(docs):
    configs = group_configs(docs)
    ing = of(docs, "Ingress")["writeup"]
    ann = ing["metadata"]["annotations"]
    assert ann["nginx.ingress.kubernetes.io/use-regex"] == "true"
    assert ann["nginx.ingress.kubernetes.io/rewrite-target"] == "/$1"
    assert int(ann["nginx.ingress.kubernetes.io/proxy-read-timeout"]) >= 600   # editor WebSockets
    routes = ingress_routes(docs)
    expected = {}
    for deployment, config in configs.items():
        for name in names_of(config):
            expected[f"/({name})$"] = deployment          # POST /{model}, as the original
            expected[f"/{name}/(.*)"] = deployment        # /{model}/v1/..., /{model}/ws/...
    expected["/(.*)"] = "writeup-server"                   # everything else, /ws/... included
    assert routes == expected
    for path in ("/gpt2-medium", "/gpt2-medium-hp", "/gpt2", "/gpt2-large"):
        assert f"/({path[1:]})$" in routes


def test_the_editor_socket_reaches_every_model_it_can_pick(docs):
    """Issue 13: the editor switches models on one WebSocket; behind the Ingress that socket is
    held by one pod, so the group /ws/... goes to must serve every editor model name."""
    configs = group_configs(docs)
    routes = ingress_routes(docs)
    for path in (EDITOR_SOCKET, "/ws/async/writeup/text_generation/session/x",
                 "/gpt2-medium-hp" + EDITOR_SOCKET, "/gpt2-large" + EDITOR_SOCKET):
        deployment = routed_to(routes, path)
        assert deployment in configs, path
        missing = set(EDITOR_MODELS) - names_of(configs[deployment])
        assert not missing, f"{path} -> {deployment}, which does not serve {sorted(missing)}"
    for name in EDITOR_MODELS:   # POST /{model}, the original backend's call, too
        deployment = routed_to(routes, "/" + name)
        assert name in names_of(configs[deployment]), name


def test_hpas_scale_the_groups_on_queue_depth(docs):
    deployments = of(docs, "Deployment")
    hpas = of(docs, "HorizontalPodAutoscaler")
    assert {h["spec"]["scaleTargetRef"]["name"] for h in hpas.values()} == \
        {n for n in deployments if n.startswith("writeup-")}
    for h in hpas.values():
        ref = h["spec"]["scaleTargetRef"]
        assert ref["kind"] == "Deployment" and ref["apiVersion"] == "apps/v1"
        assert 1 <= h["spec"]["minReplicas"] <= h["spec"]["maxReplicas"]
        (metric,) = h["spec"]["metrics"]
        assert metric["type"] == "Pods"
        assert metric["pods"]["metric"]["name"] == "writeup_queue_depth"
        assert metric["pods"]["target"]["type"] == "AverageValue"


def test_redis_is_shared_and_persistent(docs):
    services = service_backends(docs)
    redis = of(docs, "Deployment")["redis"]
    c = redis["spec"]["template"]["spec"]["containers"][0]
    assert "--appendonly" in c["args"]
    assert any(v.get("persistentVolumeClaim", {}).get("claimName") == "redis-data"
               for v in redis["spec"]["template"]["spec"]["volumes"])
    for name, config in group_configs(docs).items():
        m = re.fullmatch(r"redis://([a-z0-9-]+):(\d+)/\d+", config["cache"]["redis"])
        assert m and m.group(1) in services, config["cache"]["redis"]
        port = int(m.group(2))
        assert any(p["port"] == port for p in of(docs, "Service")[m.group(1)]["spec"]["ports"])


def test_each_group_config_is_accepted_by_the_server(docs, tmp_path):
    """The real server parses each group's config (unknown keys or bad values stop it at start);
    only what a test machine lacks is swapped: weights, GPU, port, Redis."""
    for name, config in group_configs(docs).items():
        assert config["server"]["host"] == "0.0.0.0" and config["server"]["port"] == 8080
        assert config["defaults"]["model"] in {m["name"] for m in config["models"]}
        for m in config["models"]:
            assert m["path"].startswith("/models/") and m["device"].startswith("cuda")
            m.update(path=str(TINY), device="cpu", dtype="float32")
        config["server"].update(host="127.0.0.1", port=0)
        config["cache"]["redis"] = None
        f = tmp_path / f"{name}.json"
        f.write_text(json.dumps(config))
        proc = subprocess.Popen([server_bin(), "--config", str(f), "--log-level", "warn"],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            line = proc.stdout.readline()
            assert "listening on" in line, f"{name}: {line!r} {proc.stderr.read() if proc.poll() is not None else ''}"
            url = line.split()[-1]
            deadline = time.time() + 30
            while requests.get(url + "/ready", timeout=5).status_code != 200:
                assert time.time() < deadline, f"{name} never ready"
                time.sleep(0.05)
            listed = requests.get(url + "/v1/models", timeout=5).json()["data"]
            assert [m["id"] for m in listed] == [m["name"] for m in config["models"]]
            assert [m["aliases"] for m in listed] == [m.get("aliases", []) for m in config["models"]]
            metrics = requests.get(url + "/metrics", timeout=5).text
            for m in config["models"]:
                assert re.search(rf'^writeup_queue_depth\{{model="{m["name"]}",', metrics, re.M)
            if set(EDITOR_MODELS) <= names_of(config):
                assert asyncio.run(switch_models_on_one_socket(url, EDITOR_MODELS)) == EDITOR_MODELS
        finally:
            proc.terminate()
            proc.wait(10)


async def switch_models_on_one_socket(url, names):
    """One editor socket asks each model in turn; the model names its completed frames carry."""
    answered = []
    ws_url = url.replace("http://", "ws://") + EDITOR_SOCKET
    async with websockets.connect(ws_url, open_timeout=10) as ws:
        for name in names:
            await ws.send(json.dumps({"prompt": "The dragon said", "temperature": 0.5, "top_k": 30, "top_p": 0,
                                      "length": 4, "batch_size": 2, "model_name": name,
                                      "message_type": "new_request"}))
            for _ in range(100):                                   # bounded: a few frames each
                m = json.loads(await asyncio.wait_for(ws.recv(), 30))["message"]
                assert m["message_type"] in ("updated_response", "completed_response"), m
                if m["message_type"] == "completed_response":
                    answered.append(m["model_name"])
                    break
    return answered

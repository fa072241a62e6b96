"""docker/: compose.yml validated by Debian's docker-compose (no engine needed for `config`), and
the Dockerfiles reviewed (no Dockerfile linter is packaged for Debian 12): every COPY source
exists and is inside the build context that .dockerignore leaves, stages exist, the runtime
runs as a non-root user with a HEALTHCHECK on /ready."""
import fnmatch
import json
import pathlib
import re
import subprocess

import yaml

from deploy_support import ROOT, need_tool

DOCKER = ROOT / "docker"
DOCKERFILES = [DOCKER / "Dockerfile", DOCKER / "Dockerfile.cuda"]
# Every model name the original writeup.ai editor sends or has a constant for (issue 13).
EDITOR_MODELS = ["gpt2", "gpt2-medium", "gpt2-large", "gpt2-medium-hp", "gpt2-medium-research",
                 "gpt2-medium-companies", "gpt2-medium-legal", "gpt2-medium-got", "gpt2-medium-lyrics"]


def compose(*args, file=DOCKER / "compose.yml"):
    r = subprocess.run([need_tool("docker-compose"), "-f", str(file), *args], capture_output=True,
                       text=True, cwd=DOCKER, timeout=60)
    return r


def test_compose_config_default_and_cpu_profile():
    for profile in ([], ["--profile", "cpu"]):
        r = compose(*profile, "config")
        assert r.returncode == 0, r.stderr
        services = yaml.safe_load(r.stdout)["services"]
        assert set(services) == {"writeup-server", "writeup-server-cpu", "redis"}

        gpu = services["writeup-server"]
        assert "profiles" not in gpu                       # the default service
        devices = gpu["deploy"]["resources"]["reservations"]["devices"]
        assert devices[0]["driver"] == "nvidia" and "gpu" in devices[0]["capabilities"]
        assert gpu["build"]["dockerfile"] == "docker/Dockerfile.cuda"

        cpu = services["writeup-server-cpu"]
        assert cpu["profiles"] == ["cpu"] and "deploy" not in cpu
        assert cpu["build"]["dockerfile"] == "docker/Dockerfile"

        for s in (gpu, cpu):
            assert s["restart"] == "unless-stopped"
            assert "/ready" in " ".join(s["healthcheck"]["test"])
            assert s["depends_on"]["redis"]["condition"] == "service_healthy"
            assert "redis://redis:6379/0" in s["command"]
            mounts = {v.split(":")[1]: v.split(":")[0] for v in s["volumes"]}
            assert mounts["/etc/writeup/server.json"] == str(ROOT / "config" / ("server.json" if s is gpu else "cpu.json"))
            assert mounts["/models"] == str(ROOT / "models")
            # the editor can pick any of its models on either service (names or aliases)
            served = json.loads(pathlib.Path(mounts["/etc/writeup/server.json"]).read_text())
            names = {n for m in served["models"] for n in [m["name"], *m.get("aliases", [])]}
            assert set(EDITOR_MODELS) <= names, sorted(set(EDITOR_MODELS) - names)
            assert "--model" not in s["command"]              # flags would drop the aliases
            assert (ROOT / s["build"]["dockerfile"]).is_file()
            assert s["build"]["context"] == str(ROOT)

        redis = services["redis"]
        assert "--appendonly" in redis["command"]
        assert any(v.endswith(":/data:rw") or v.endswith(":/data") for v in redis["volumes"])
    assert "redis-data" in yaml.safe_load(compose("config").stdout)["volumes"]


def test_compose_config_rejects_a_broken_file(tmp_path):
    # the validation is real: a misspelt key fails it
    bad = tmp_path / "compose.yml"
    bad.write_text((DOCKER / "compose.yml").read_text().replace("restart: unless-stopped", "restrat: always", 1))
    r = compose("config", file=bad)
    assert r.returncode != 0 and "restrat" in r.stderr


def instructions(path):
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    out, cur = [], ""
    for line in path.read_text().splitlines():
        s = line.strip()
        if not cur and (not s or s.startswith("#")):
            continue
        if cur and s.startswith("#"):
            continue
        cur += " " + s[:-1] if s.endswith("\\") else " " + s
        if not s.endswith("\\"):
            word, _, rest = cur.strip().partition(" ")
            out.append((word.upper(), rest.strip()))
            cur = ""
    return out


def dockerignore_excludes(rel):
    patterns = [l.strip() for l in (ROOT / ".dockerignore").read_text().splitlines()
                if l.strip() and not l.strip().startswith("#")]
    parts = rel.strip("/").split("/")
    prefixes = ["/".join(parts[:i + 1]) for i in range(len(parts))]
    excluded = False
    for p in patterns:
        neg = p.startswith("!")
        pat = p.lstrip("!").strip("/")
        if any(fnmatch.fnmatchcase(x, pat) for x in prefixes):
            excluded = not neg
    return excluded


def test_dockerignore_keeps_build_outputs_and_weights_out():
    for rel in ("build/writeup-server", "build-release/x", ".git/config", "models/gpt2/model.safetensors",
                "tests/node/node_modules/x/package.json", "tests/data/golden.json"):
        assert dockerignore_excludes(rel), rel
    for rel in ("CMakeLists.txt", "src/main.cpp", "include/writeup/server/config.hpp",
                "scripts/install-deps.sh", "models/manifest.json", "tests/node/package.json"):
        assert not dockerignore_excludes(rel), rel


def test_dockerfiles_copy_only_what_exists_and_run_as_non_root():
    for path in DOCKERFILES:
        ins = instructions(path)
        stages = set()
        for word, rest in ins:
            if word == "FROM":
                m = re.match(r"(\S+)(?:\s+AS\s+(\S+))?$", rest, re.I)
                assert m, rest
                if m.group(2):
                    stages.add(m.group(2))
            if word in ("COPY", "ADD"):
                args = rest.split()
                flags = [a for a in args if a.startswith("--")]
                srcs = [a for a in args if not a.startswith("--")][:-1]
                assert srcs, rest
                if any(f.startswith("--from=") for f in flags):
                    assert flags[0].split("=", 1)[1] in stages, f"{path.name}: unknown stage in {rest}"
                    continue
                for src in srcs:
                    assert (ROOT / src).exists(), f"{path.name}: COPY {src}: no such file"
                    assert not dockerignore_excludes(src), f"{path.name}: {src} is in .dockerignore"
                    if (ROOT / src).is_dir():
                        tracked = [p for p in (ROOT / src).rglob("*") if p.is_file()]
                        assert tracked, src
        assert stages >= {"build", "runtime"}
        final = [r for w, r in ins if w == "USER"]
        assert final and final[-1] not in ("root", "0") and not final[-1].startswith("0:"), path.name
        assert re.search(r"useradd .*--uid 10001 .*writeup", " ".join(r for w, r in ins if w == "RUN"))
        health = [r for w, r in ins if w == "HEALTHCHECK"]
        assert len(health) == 1 and "http://127.0.0.1:8080/ready" in health[0], path.name
        assert any(w == "EXPOSE" and r == "8080" for w, r in ins)
        assert any(w == "VOLUME" and "/models" in r for w, r in ins)
        entry = [json.loads(r) for w, r in ins if w == "ENTRYPOINT"]
        assert entry == [["writeup-server"]]
        assert json.loads([r for w, r in ins if w == "CMD"][-1])      # exec form
        # the last stage is the runtime one
        assert [r for w, r in ins if w == "FROM"][-1].endswith("AS runtime")


def test_cpu_image_builds_with_install_deps_and_tests_off():
    text = (DOCKER / "Dockerfile").read_text()
    assert "FROM debian:bookworm AS build" in text and "FROM debian:bookworm-slim AS runtime" in text
    assert "bash scripts/install-deps.sh" in text
    assert "-DWRITEUP_BUILD_TESTS=OFF" in text and "-DCMAKE_BUILD_TYPE=Release" in text
    cuda = (DOCKER / "Dockerfile.cuda").read_text()
    assert re.search(r"ARG PYTORCH_IMAGE=pytorch/pytorch:\S+-cuda\S+-devel", cuda)
    assert re.search(r"ARG CUDA_RUNTIME_IMAGE=nvidia/cuda:\S+-runtime-\S+", cuda)
    # every runtime library of the CPU image is a real Debian 12 package name
    pkgs = re.search(r"install -y -q --no-install-recommends \\\n(.*?)&& rm", text.split("AS runtime")[1], re.S)
    names = pkgs.group(1).replace("\\", " ").split()
    r = subprocess.run(["apt-cache", "show", "--no-all-versions", *names], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


def test_no_syntax_line_and_one_gid_for_the_writeup_group():
    """Issue 13: `# syntax=docker/dockerfile:1` made BuildKit fetch a frontend image first (builds
    failed on hosts that only reach a mirror); useradd --user-group gave the group gid 999 while
    the README and the k8s runAsGroup/fsGroup say 10001."""
    for path in DOCKERFILES:
        text = path.read_text()
        assert not re.search(r"^#\s*syntax\s*=", text, re.M | re.I), path.name
        runs = " ".join(r for w, r in instructions(path) if w == "RUN")
        assert re.search(r"groupadd .*--gid 10001 writeup", runs), path.name
        assert re.search(r"useradd .*--uid 10001 --gid 10001 .*writeup", runs), path.name
        assert "--user-group" not in runs, path.name
    readme = (ROOT / "README.md").read_text() + (DOCKER / "README.md").read_text()
    assert "uid 10001" in readme and "gid 10001" in readme
    assert "gid 999" not in readme
    for f in (DOCKER / "k8s").glob("*.yaml"):
        for d in yaml.safe_load_all(f.read_text()):
            spec = (d or {}).get("spec", {}).get("template", {}).get("spec", {})
            ctx = spec.get("securityContext", {})
            if ctx.get("runAsUser") == 10001:
                assert ctx["runAsGroup"] == 10001 and ctx["fsGroup"] == 10001, f.name


def test_both_images_serve_the_editor_page():
    """Issue 14: each image builds src/web in its own stage (the lock file's packages) and puts the
    page where the server's "auto" static_dir looks: /usr/local/bin/../share/writeup/web."""
    for rel in ("src/web/node_modules/react/package.json", "src/web/dist/index.html"):
        assert dockerignore_excludes(rel), rel
    for rel in ("src/web/package.json", "src/web/package-lock.json", "src/web/src/main.tsx", "scripts/build-web"):
        assert not dockerignore_excludes(rel), rel
    for path in DOCKERFILES:
        text = path.read_text()
        web = text.split("AS web", 1)[1].split("\nFROM ", 1)[0]
        assert "npm ci" in web and "scripts/build-web --out /opt/writeup/web" in web, path.name
        runtime = text.split("AS runtime", 1)[1]
        assert "COPY --from=web /opt/writeup/web /usr/local/share/writeup/web" in runtime, path.name
        assert "COPY --from=build /src/build/writeup-server" in runtime  # the binary in /usr/local/bin


def test_cpu_runtime_copies_only_the_libraries_the_binaries_load():
    """The runtime stage takes scripts/runtime-libs' set (checked alone in test_runtime_libs.py)
    instead of installing libtorch1.13 and every hard dependency of Debian's package."""
    build, runtime = (DOCKER / "Dockerfile").read_text().split("AS runtime")
    assert "scripts/runtime-libs --no-libc /opt/writeup/lib" in build
    for binary in ("writeup-server", "writeup-generate", "writeup-make-model"):
        assert f"build/{binary}" in build.split("scripts/runtime-libs --no-libc")[1]
    assert "COPY --from=build /opt/writeup/lib /usr/local/lib/writeup" in runtime
    assert "ldconfig" in runtime
    assert "libtorch" not in runtime.split("COPY --from=build")[0]   # no apt-installed libtorch
    assert '! ldd /usr/local/bin/writeup-server | grep "not found"' in runtime

#!/usr/bin/env bash
# Installs every Debian package writeup needs to build, test and benchmark.
# Idempotent: packages already present are skipped by apt. Works as root or via sudo.
#   scripts/install-deps.sh          everything: build, tests, sanitizers, fuzzers, benchmarks
#                                    (what scripts/test and CI run)
#   scripts/install-deps.sh --serve  only what building and running the server and its editor
#                                    page needs (scripts/serve): no test tools or services
set -euo pipefail

SERVE_ONLY=0
case "${1:-}" in
  --serve) SERVE_ONLY=1 ;;
  "") ;;
  *) echo "usage: $0 [--serve]" >&2; exit 2 ;;
esac

PACKAGES=(
  # build tools
  build-essential cmake ninja-build pkg-config ccache git
  # libraries
  libtorch-dev libopenblas0-pthread
  libboost-dev libboost-program-options-dev
  nlohmann-json3-dev libspdlog-dev libfmt-dev
  libhiredis-dev libpcre2-dev
  # scripts/serve and fetch-model
  curl python3
)
# node and npm build the editor page (src/web) and run the JS test clients; some images ship a
# Node.js whose package conflicts with Debian's npm, so take Debian's only when node is absent.
if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
  PACKAGES+=(nodejs npm)
fi
if [ "$SERVE_ONLY" -eq 0 ]; then
  PACKAGES+=(
    libgtest-dev libgmock-dev
    # fuzzing and sanitizers (scripts/test): clang 14 with libFuzzer and its sanitizer
    # runtimes, llvm-symbolizer for readable stacks (gcc's ASan/UBSan come with gcc)
    clang libclang-rt-14-dev llvm
    # services and test clients
    redis-server prometheus wrk
    python3-pytest python3-websockets python3-requests
    # deployment tests (tests/deploy): scale-out proxy, compose validation, k8s YAML, script lint
    nginx docker-compose python3-yaml shellcheck
    # scripts/bench-ggml's model converter (scripts/bench/to_ggml.py)
    python3-numpy
    # the editor page's browser test (src/web/e2e): Debian's chromium, driven by playwright-core
    chromium fonts-dejavu-core
  )
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  SUDO="sudo"
fi

missing=()
for p in "${PACKAGES[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done

if [ "${#missing[@]}" -gt 0 ]; then
  echo "install-deps: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -q
  $SUDO apt-get install -y -q --no-install-recommends "${missing[@]}"
else
  echo "install-deps: all ${#PACKAGES[@]} packages present"
fi

# tests/node's npm packages (pinned in its package.json, installed into tests/node/node_modules,
# ignored by git): the reference tokenizer (gpt-3-encoder) for the tokenizer cross-check and the
# official OpenAI SDK (openai) for the SDK test. Skipped when both are there.
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
if [ "$SERVE_ONLY" -eq 0 ] && { [ ! -f "$ROOT/tests/node/node_modules/gpt-3-encoder/package.json" ] ||
                                [ ! -f "$ROOT/tests/node/node_modules/openai/package.json" ]; }; then
  echo "install-deps: npm install in tests/node (gpt-3-encoder, openai)"
  (cd "$ROOT/tests/node" && npm install --no-audit --no-fund --loglevel=error)
fi
# src/web's npm packages (the editor page: React, Slate, Vite, Vitest, ESLint, playwright-core;
# pinned by its package-lock.json) for the page's build and tests.
if [ "$SERVE_ONLY" -eq 0 ] && { [ ! -f "$ROOT/src/web/node_modules/.package-lock.json" ] ||
                                [ "$ROOT/src/web/package-lock.json" -nt "$ROOT/src/web/node_modules/.package-lock.json" ]; }; then
  echo "install-deps: npm ci in src/web (the editor page)"
  (cd "$ROOT/src/web" && npm ci --no-audit --no-fund --loglevel=error)
fi

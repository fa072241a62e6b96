#!/usr/bin/env bash
# aten-free.sh BUILD_DIR: the server's translation units (src/server, src/api, src/cache,
# src/service, src/metrics, src/main.cpp) must not include ATen or torch headers, even
# indirectly: including them costs ~20 s per file and ties the network code to libtorch.
# Reads the header dependencies Ninja recorded for each object (the build must be current).
set -euo pipefail
build=${1:?usage: aten-free.sh BUILD_DIR}
cd "$build"
[[ -f build.ninja ]] || { echo "aten-free: $build is not a Ninja build" >&2; exit 1; }
objects=$(ninja -t deps | grep -oE '^[^:]*/src/(server|api|cache|service|metrics)/[^:]*\.o|^[^:]*/src/main\.cpp\.o' || true)
[[ -n "$objects" ]] || { echo "aten-free: no server objects found in $build (not built?)" >&2; exit 1; }
bad=0
checked=0
for o in $objects; do
  checked=$((checked + 1))
  hits=$(ninja -t deps "$o" | grep -E '/(ATen|c10|torch)/' | head -3 || true)
  if [[ -n "$hits" ]]; then
    echo "aten-free: $o includes libtorch headers, e.g.:" >&2
    echo "$hits" >&2
    bad=1
  fi
done
echo "aten-free: checked $checked objects"
exit $bad

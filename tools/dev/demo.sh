#!/usr/bin/env bash
# demo.sh — what `make demo` runs.  The refit demo itself (trainer and
# inference ranks refitting over tcp) arrives with the engine; until then
# this shows the parts that exist and says so plainly.
set -euo pipefail
build=${1:-build}
refit="$build/tools/refit/refit"
if "$refit" --help 2>/dev/null | grep -q '^  demo '; then
  exec "$refit" demo
fi
echo "== refit plugins"
"$refit" plugins
echo
echo "== refit config check configs/clusters/local.yaml"
"$refit" config check configs/clusters/local.yaml || true
echo
echo "The refit demo (trainer and inference ranks as processes, refit cycles, verification)"
echo "is not built yet: it needs the pull-mode engine. See docs/architecture.md."

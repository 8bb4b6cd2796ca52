#!/usr/bin/env bash
# engines_logits.sh — on the GPU machine (torch + transformers, no vLLM):
# a transformers Qwen3 refit through refit.vllm's checkpoint path must give
# the reference logits bit for bit (tools/dev/gpu/engines_logits.py).
#
# Runs a packed build; builds nothing.  Here (the development machine):
#   tools/dev/gpu/pack.sh BUILD_DIR devbuild && ../shared/hooks/device-pack devbuild
# then on the GPU machine, from the project root (device tool: carry .devpack):
#   source .devpack/env.sh && tools/dev/gpu/engines_logits.sh
# The Python package comes from this worktree (bindings/python); librefit and
# its plugins from the pack ($REFIT_BUILD/librefit.so, $REFIT_BUILD/plugins).
set -euo pipefail
cd "$(dirname "$0")/../../.."
: "${REFIT_BUILD:?source .devpack/env.sh first (tools/dev/gpu/pack.sh + device-pack)}"
lib=$(ls "$REFIT_BUILD"/librefit.so 2>/dev/null || ls "$REFIT_BUILD"/core/librefit.so 2>/dev/null || true)
[ -n "$lib" ] || { echo "engines_logits.sh: no librefit.so in $REFIT_BUILD" >&2; exit 2; }
export REFIT_LIBRARY="$lib"
export PYTHONPATH="$PWD/bindings/python${PYTHONPATH:+:$PYTHONPATH}"
python3 -c 'import torch, transformers' 2>/dev/null || { echo "engines_logits.sh: needs torch and transformers" >&2; exit 77; }
python3 -c 'import torch; assert torch.cuda.is_available()' 2>/dev/null || { echo "engines_logits.sh: no GPU" >&2; exit 77; }
exec timeout 500 python3 tools/dev/gpu/engines_logits.py "$@"

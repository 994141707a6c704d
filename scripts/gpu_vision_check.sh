#!/usr/bin/env bash
# TensorRT check for `llmedge vision`: train the digits CNN, convert it to ONNX, ONNX Runtime INT8
# and a TensorRT engine, and print the bench table with the TensorRT row. Needs an NVIDIA GPU,
# a CUDA build of torch, onnx, onnxscript, onnxruntime, scikit-learn, numpy, rich, jinja2, psutil
# (an image with PyTorch usually has them) and runs offline. About a minute.
#
#   bash scripts/gpu_vision_check.sh            # from the repository root
#
# Wheels it may need, for Python 3.12 on x86-64, fetched beforehand on a machine with internet
# into .whl/ (the script installs whatever is there into /tmp/site, without an index):
#
#   P="--only-binary=:all: --no-deps --python-version 3.12 --implementation cp \
#      --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64"
#   # llmedge's own dependencies, when the image lacks them (about 3 MB):
#   pip download $P -d .whl pydantic==2.14.4 pydantic-core==2.50.5 pydantic-settings==2.16.3 \
#       python-dotenv==1.2.4 platformdirs==4.14.8 annotated-types==0.8.0 \
#       typing-inspection==0.4.5 typing-extensions==4.16.0
#   # TensorRT 11 for CUDA 13 (match torch.version.cuda; use the -cu12 names for CUDA 12):
#   pip download $P -d .whl tensorrt-cu13-bindings==11.4.0.106          # 1.3 MB, on PyPI
#   pip download $P -d .whl --extra-index-url https://pypi.nvidia.com tensorrt-cu13-libs==11.4.0.106
#
# The last one is the catch: PyPI holds only a stub for tensorrt-cu13-libs that downloads the
# real wheel (over 1 GB) from NVIDIA's own index at install time, so it must come from a machine
# that reaches that index, or TensorRT must already be installed on the GPU machine.
set -uo pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON:-python3}
WHEELS=${WHEELS:-.whl}
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"

if ! command -v nvidia-smi >/dev/null || ! nvidia-smi -L; then
    echo "gpu_vision_check: no NVIDIA GPU here; TensorRT needs one" >&2
    exit 3
fi

if compgen -G "$WHEELS/*.whl" >/dev/null; then
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/site "$WHEELS"/*.whl || exit 3
    export PYTHONPATH="/tmp/site:$PYTHONPATH"
fi

"$PY" - <<'EOF' || exit 3
import importlib, sys
missing = []
for name in ("torch", "onnx", "onnxscript", "onnxruntime", "sklearn", "llmedge"):
    try:
        importlib.import_module(name)
    except ImportError as exc:
        missing.append(f"{name} ({exc})")
import torch
print(f"python {sys.version.split()[0]}, torch {torch.__version__}, CUDA {torch.version.cuda}")
if not torch.cuda.is_available():
    missing.append("a CUDA build of torch that sees the GPU")
from vision.tensorrt import unavailable_reason
reason = unavailable_reason() if not missing else None
if missing or reason:
    print("gpu_vision_check: cannot run TensorRT here:", "; ".join(missing) or reason, file=sys.stderr)
    print("see the wheel list at the top of scripts/gpu_vision_check.sh", file=sys.stderr)
    sys.exit(3)
print(f"GPU {torch.cuda.get_device_name(0)}")
EOF

"$PY" scripts/vision_demo.py --to onnx,ort-int8,tensorrt

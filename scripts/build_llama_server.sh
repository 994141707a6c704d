#!/usr/bin/env bash
# Builds llama.cpp's llama-server (or another of its tools, e.g. llama-bench) from the sources
# vendored in the llama-cpp-python sdist that llmedge pins, so benchmarks compare against the
# very same llama.cpp commit.
#   scripts/build_llama_server.sh [OUTDIR] [TARGET]
#   (default: build/llama-server and llama-server; prints the binary path)
set -euo pipefail
out=${1:-build/llama-server}
target=${2:-llama-server}
version=$(python3 -c "import re,pathlib; print(re.search(r'llama-cpp-python==([\d.]+)', pathlib.Path('pyproject.toml').read_text()).group(1))")
mkdir -p "$out"
cd "$out"
if [ ! -d src ]; then
  python3 -m pip download --quiet --no-deps --no-binary :all: "llama-cpp-python==$version" -d sdist
  mkdir -p src && tar -xzf sdist/llama_cpp_python-"$version".tar.gz -C src --strip-components 1
fi
# The same flags as llama-cpp-python's build in the Makefile: native, without AMX.
flags=""
[ "$(uname -m)" = x86_64 ] && flags="-mno-amx-tile -mno-amx-int8 -mno-amx-bf16"
cmake -S src/vendor/llama.cpp -B cmake-build -DCMAKE_BUILD_TYPE=Release \
  -DCMAKE_C_FLAGS="$flags" -DCMAKE_CXX_FLAGS="$flags" \
  -DLLAMA_BUILD_SERVER=ON -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_CURL=OFF \
  -DLLAMA_OPENSSL=OFF -DBUILD_SHARED_LIBS=OFF >/dev/null
cmake --build cmake-build --target "$target" -j "$(nproc)" >/dev/null
realpath "cmake-build/bin/$target"

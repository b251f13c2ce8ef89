#!/usr/bin/env bash
# The wheels the lent H200's image lacks (it has Python 3.12, torch, transformers, numpy, scikit-learn, typer,
# rich, ...: device/KINDS.md), for scripts/gpu_check.py. Nothing can be fetched there, so they travel with the
# call; the tree (~41 MB) plus every wheel (~60 MB) is over the device tool's 64 MiB a call, so they come in
# three batches: .whl/a (wandb), .whl/b (transformers and the hub client this project was tested with, newer than
# the image's) and .whl/c (the rest), installed into .site, an ignored folder the warm machine keeps between calls. The names are the packages our code imports that the image lacks
# (read off sys.modules after importing every module of interp, analyses, probes and saes); the versions are the
# ones this project's .venv tested.
#
#   bash scripts/gpu_wheels.sh        # here, once per session that was lent a GPU
#
# then three device calls, back to back (the machine goes back after 30 s idle):
#   run(carry=[".whl/a"], timeout_s=120, command="python3 -m pip install -q --no-index --no-deps --no-compile
#       --no-cache-dir --target .site .whl/a/*.whl && echo installed a")
#   the same with .whl/b
#   run(carry=[".whl/c"], timeout_s=590, command="python3 -m pip install -q --no-index --no-deps --no-compile
#       --no-cache-dir --target .site .whl/c/*.whl && export PYTHONPATH=$PWD/.site:$PWD PYTHONUNBUFFERED=1 &&
#       python3 -c 'import transformers, sae_lens, nnsight; print(transformers.__version__)' &&
#       python3 scripts/gpu_check.py 2>&1 | tee $OUT/log")
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
[ -x "$PY" ] || { echo "run bash scripts/setup.sh first: the versions come from .venv" >&2; exit 2; }
for d in /.whl/ /.site/; do grep -qxF "$d" .git/info/exclude 2>/dev/null || echo "$d" >> .git/info/exclude; done

A="wandb"
B="transformers huggingface_hub tokenizers httpx2 httpcore2 truststore"
C="zstandard transformer-lens sae-lens nnsight plotly kaleido choreographer logistro datasets dill multiprocess better-abc
simple-parsing docstring_parser pydantic pydantic_core annotated-types typing-inspection greenlet platformdirs sniffio
googleapis-common-protos opentelemetry-api opentelemetry-sdk opentelemetry-proto opentelemetry-semantic-conventions
opentelemetry-exporter-otlp-proto-http opentelemetry-exporter-otlp-proto-common opentelemetry-exporter-otlp-common
opentelemetry-exporter-http-transport"

pinned() { for n in "$@"; do echo "$n==$($PY -c "import importlib.metadata as m, sys; print(m.version(sys.argv[1]))" "$n")"; done; }

rm -rf .whl && mkdir -p .whl/a .whl/b .whl/c
for part in a b c; do
  case $part in a) names=$A ;; b) names=$B ;; c) names=$C ;; esac
  # shellcheck disable=SC2046
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_24_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 --platform manylinux_2_5_x86_64 --platform manylinux1_x86_64 \
    -d .whl/$part $(pinned $names) 2>&1 | grep -v '^WARNING: Location' || true
done
tree=$(git ls-files -z | xargs -0 du -cb | tail -1 | cut -f1)
for part in a b c; do
  w=$(du -cb .whl/$part/*.whl | tail -1 | cut -f1)
  echo ".whl/$part: $(ls .whl/$part | wc -l) wheels, $((w / 1000000)) MB; with the tree $(((w + tree) / 1000000)) MB (limit 67 MB)"
done

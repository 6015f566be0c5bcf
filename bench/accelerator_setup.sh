#!/usr/bin/env bash
# Bring bench/accelerator.py's missing packages to a GPU machine as wheels, then (--run) run it.
#
# On a machine with PyPI access, in the repo root (once; .whl/ is git-ignored, carry it along):
#   bash bench/accelerator_setup.sh --download
# On the GPU machine (jax with CUDA, flax, optax, orbax, chex, torch, einops, safetensors preinstalled;
# no network), the one command:
#   bash bench/accelerator_setup.sh --run --peak-tflops 989 [more bench/accelerator.py arguments]
#
# The wheels: stable-audio-tools 0.0.19 alone (installed --no-deps; its DiT needs only torch, einops,
# safetensors, numpy and packaging, all in the GPU image; jaxstage loads it without its package
# __init__s). grain and librosa are not needed: the benchmark's batches are synthetic and an
# absent grain is replaced by an inert stub (docs/accelerator.md). Without .whl/ everything but the
# torch rows still runs (those report "failed: stable-audio-tools is not installed").
# Installed into $JAXSTAGE_SITE (default /tmp/jaxstage_site), put first on PYTHONPATH with the repo.
set -euo pipefail
cd "$(dirname "$0")/.."

WHEELS=(stable-audio-tools==0.0.19)
PYTHON=${PYTHON:-python3}
SITE=${JAXSTAGE_SITE:-/tmp/jaxstage_site}

if [[ "${1:-}" == "--download" ]]; then
    mkdir -p .whl
    "$PYTHON" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
        -d .whl "${WHEELS[@]}"
    ls -l .whl
    exit 0
fi

if compgen -G ".whl/*.whl" >/dev/null; then
    "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" .whl/*.whl
fi
export PYTHONPATH="$SITE:$PWD${PYTHONPATH:+:$PYTHONPATH}"
"$PYTHON" - <<'EOF'
import importlib.util
for name in ("jax", "flax", "optax", "orbax.checkpoint", "chex", "torch", "einops", "safetensors", "stable_audio_tools",
             "grain", "librosa"):
    try:
        found = importlib.util.find_spec(name) is not None
    except ImportError:
        found = False
    print(f"  {name:20s} {'found' if found else 'missing'}")
EOF
if [[ "${1:-}" == "--run" ]]; then
    shift
    exec "$PYTHON" bench/accelerator.py "$@"
fi
echo "export PYTHONPATH=$PYTHONPATH   # then: $PYTHON bench/accelerator.py --peak-tflops 989"

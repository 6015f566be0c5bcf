#!/usr/bin/env bash
# Train jaxstage on every worker of a multi-host Cloud TPU VM slice (e.g. v5litepod-16: 4 hosts x 4 chips).
#
#   launch/tpu_vm.sh setup          # once per slice: clone (or update) and install jaxstage on every worker
#   launch/tpu_vm.sh [ARGS ...]     # train; ARGS are passed to `jaxstage train`, e.g. --set train.steps=20000
#
# What it sets: nothing for the distributed start. Every worker runs the same `jaxstage train`; JAX
# detects the slice (TPU_WORKER_HOSTNAMES, this worker's number) and jaxstage calls
# jax.distributed.initialize() without arguments (jaxstage/distributed.py).
#
# What you edit: the variables below (or export them before running): the slice, its zone and
# project, the checkout and virtual environment on the workers, the config and the run directory.
#
# WORKDIR must be one directory shared by all workers, mounted at the same path on each (GCS FUSE,
# Filestore/NFS, Managed Lustre): every process writes its part of each Orbax checkpoint there, and
# process 0 writes config.json, metrics and samples. A gs:// URL is NOT supported (jaxstage treats
# the run directory as a local path), and a local disk on each worker leaves every checkpoint
# incomplete. With GCS FUSE use a bucket with hierarchical namespace (Orbax finishes a checkpoint by
# renaming its directory), or mount with --rename-dir-limit. data.path of prepared data must likewise
# be readable on every worker. Re-running with the same WORKDIR resumes from its newest checkpoint.
#
# The run lives as long as this ssh session: for long runs start this script inside tmux/screen.
# The remote commands are bash (the TPU VM images' login shell).
set -euo pipefail

# ---- edit these ------------------------------------------------------------------------------
TPU_NAME="${TPU_NAME:-jaxstage-v5e-16}"   # the TPU VM slice (gcloud compute tpus tpu-vm list --zone ZONE)
ZONE="${ZONE:-us-west4-a}"                # its zone
PROJECT="${PROJECT:-my-gcp-project}"      # the Google Cloud project that owns it
REPO_DIR="${REPO_DIR:-jaxstage}"          # jaxstage checkout on every worker (relative: under the ssh user's home)
VENV="${VENV:-.venv}"                     # virtual environment with jaxstage (relative: inside REPO_DIR)
CONFIG="${CONFIG:-configs/synth_t2a.py}"  # experiment file (relative: inside REPO_DIR)
WORKDIR="${WORKDIR:-/mnt/shared/runs/synth_t2a}"  # run directory on a mount shared by all workers (see above)
# setup only:
REPO_URL="${REPO_URL:-https://github.com/YOUR_ORG/jaxstage.git}"  # where `setup` clones jaxstage from
PYTHON="${PYTHON:-python3.11}"            # a Python >= 3.11 on the workers (Ubuntu 22.04 images ship 3.10: install one first)
# ----------------------------------------------------------------------------------------------

q() { printf '%q' "$1"; }

on_all_workers() {
    gcloud compute tpus tpu-vm ssh "$TPU_NAME" --zone "$ZONE" --project "$PROJECT" --worker=all --command "$1"
}

if [[ "${1:-}" == "setup" ]]; then
    # jaxstage from the checkout, then the TPU build of jax (jaxstage's extras hold no jax variant)
    on_all_workers "set -euo pipefail
if [ -d $(q "$REPO_DIR")/.git ]; then git -C $(q "$REPO_DIR") pull --ff-only; else git clone $(q "$REPO_URL") $(q "$REPO_DIR"); fi
cd $(q "$REPO_DIR")
[ -x $(q "$VENV")/bin/python ] || $(q "$PYTHON") -m venv $(q "$VENV")
$(q "$VENV")/bin/pip install -U pip
$(q "$VENV")/bin/pip install -e .
$(q "$VENV")/bin/pip install -U 'jax[tpu]'"
    exit 0
fi

extra=""
if (($# > 0)); then
    extra=" $(printf '%q ' "$@")"
fi
on_all_workers "cd $(q "$REPO_DIR") && exec $(q "$VENV")/bin/jaxstage train --config $(q "$CONFIG") --workdir $(q "$WORKDIR")${extra}"

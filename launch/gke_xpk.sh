#!/usr/bin/env bash
# GKE with xpk: the job of launch/gke_jobset.yaml (one TPU slice, one jaxstage process per host),
# submitted with `xpk workload create` (pip install xpk; a cluster made by `xpk cluster create`).
#
#   launch/gke_xpk.sh [ARGS ...]    # ARGS are passed to `jaxstage train`, e.g. --set train.steps=20000
#   xpk workload list --cluster "$CLUSTER" --project "$PROJECT" --zone "$ZONE"
#
# What it sets: nothing for the distributed start. xpk runs a JobSet; GKE gives every pod
# TPU_WORKER_ID and TPU_WORKER_HOSTNAMES and JAX detects the slice (jaxstage/distributed.py).
#
# What you edit: the variables below (or export them before running). IMAGE must contain jaxstage
# installed from a checkout at APP_DIR plus the TPU build of jax (pip install -e . && pip install -U
# "jax[tpu]").
#
# WORKDIR must be on storage that every pod mounts: every process writes its part of each Orbax
# checkpoint, process 0 writes config.json, metrics and samples. A gs:// URL is NOT supported
# (jaxstage treats it as a local path). Attach a bucket (GCS FUSE) or Filestore to the cluster once,
# e.g.
#   xpk storage attach jaxstage-runs --type=gcsfuse --bucket=my-jaxstage-runs --mount-point=/mnt/runs \
#     --readonly=false --auto-mount=false --size=1 --cluster "$CLUSTER" --project "$PROJECT" --zone "$ZONE"
# and name it in STORAGE (with GCS FUSE prefer a bucket with hierarchical namespace: Orbax finishes a
# checkpoint by renaming its directory). A restart (MAX_RESTARTS) resumes from the newest checkpoint.
set -euo pipefail

# ---- edit these ------------------------------------------------------------------------------
CLUSTER="${CLUSTER:-jaxstage-cluster}"    # the GKE cluster (xpk cluster create --cluster ...)
PROJECT="${PROJECT:-my-gcp-project}"      # its Google Cloud project
ZONE="${ZONE:-us-west4-a}"                # its zone
TPU_TYPE="${TPU_TYPE:-v5litepod-16}"      # one slice of this type: v5litepod-16 = v5e 4x4 = 4 hosts x 4 chips
IMAGE="${IMAGE:-us-docker.pkg.dev/MY_PROJECT/MY_REPO/jaxstage:latest}"  # image with jaxstage + jax[tpu]
APP_DIR="${APP_DIR:-/app}"                # the jaxstage checkout inside the image
STORAGE="${STORAGE:-jaxstage-runs}"       # xpk storage holding the run directory (see above)
CONFIG="${CONFIG:-configs/synth_t2a.py}"  # experiment file (relative: inside APP_DIR)
WORKDIR="${WORKDIR:-/mnt/runs/synth_t2a}" # run directory under the storage's mount point
WORKLOAD="${WORKLOAD:-jaxstage-$(date +%m%d-%H%M%S)}"  # workload name: unique, lower-case letters, digits and '-'
MAX_RESTARTS="${MAX_RESTARTS:-0}"         # > 0: restart the whole slice after a failure
# ----------------------------------------------------------------------------------------------

extra=""
if (($# > 0)); then
    extra=" $(printf '%q ' "$@")"
fi
command="cd $(printf '%q' "$APP_DIR") && jaxstage train --config $(printf '%q' "$CONFIG") --workdir $(printf '%q' "$WORKDIR")${extra}"

xpk workload create \
    --cluster "$CLUSTER" --project "$PROJECT" --zone "$ZONE" \
    --workload "$WORKLOAD" \
    --tpu-type "$TPU_TYPE" --num-slices 1 \
    --docker-image "$IMAGE" \
    --storage "$STORAGE" \
    --max-restarts "$MAX_RESTARTS" \
    --command "$command"

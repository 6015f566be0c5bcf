#!/usr/bin/env bash
# N jaxstage training processes on this machine, joined over loopback (multi-controller JAX).
#
#   NUM_PROCESSES=2 DEVICES_PER_PROCESS=2 launch/local_multiprocess.sh \
#       --config configs/tiny_t2a.py --workdir runs/tiny_mp
#
# Every argument goes to `jaxstage train`. What you may edit (environment variables):
#   NUM_PROCESSES        processes to start (default 2)
#   DEVICES_PER_PROCESS  devices each process drives (default 1)
#   PLATFORM             cpu (default): each process fakes DEVICES_PER_PROCESS CPU devices;
#                        gpu: process i sees GPUs i*D .. i*D+D-1 through CUDA_VISIBLE_DEVICES
#   PORT                 coordinator port on 127.0.0.1 (default: a free one)
#   LOG_DIR              where processes 1..N-1 write process_I.log (default: a new temp folder);
#                        process 0 prints to this terminal (it alone writes the run's logs)
#   GRACE_SECONDS        after one process fails, how long the others get to exit on their own
#                        (they stop with an error within the heartbeat timeout) before being killed
#   JAXSTAGE             the command to run (default: "python -m jaxstage.cli")
# What it sets for each process: JAXSTAGE_COORDINATOR, JAXSTAGE_NUM_PROCESSES, JAXSTAGE_PROCESS_ID,
# and JAX_PLATFORMS + XLA_FLAGS (cpu) or CUDA_VISIBLE_DEVICES (gpu).
# Ctrl-C / SIGTERM is forwarded: every process checkpoints and stops at its next step boundary.
# Exit status: 0 when all processes succeed, else the first failing process's status.
set -euo pipefail

NUM_PROCESSES="${NUM_PROCESSES:-2}"
DEVICES_PER_PROCESS="${DEVICES_PER_PROCESS:-1}"
PLATFORM="${PLATFORM:-cpu}"
GRACE_SECONDS="${GRACE_SECONDS:-150}"
JAXSTAGE="${JAXSTAGE:-python -m jaxstage.cli}"
if [[ -z "${PORT:-}" ]]; then
  PORT="$(python -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
fi
LOG_DIR="${LOG_DIR:-$(mktemp -d "${TMPDIR:-/tmp}/jaxstage_local_multiprocess.XXXXXX")}"
mkdir -p "$LOG_DIR"

if ! [[ "$NUM_PROCESSES" =~ ^[1-9][0-9]*$ && "$DEVICES_PER_PROCESS" =~ ^[1-9][0-9]*$ ]]; then
  echo "local_multiprocess.sh: NUM_PROCESSES=$NUM_PROCESSES and DEVICES_PER_PROCESS=$DEVICES_PER_PROCESS must be positive integers" >&2
  exit 2
fi
if [[ "$PLATFORM" != cpu && "$PLATFORM" != gpu ]]; then
  echo "local_multiprocess.sh: PLATFORM=$PLATFORM must be cpu or gpu" >&2
  exit 2
fi

read -r -a command <<< "$JAXSTAGE"
pids=()

# shellcheck disable=SC2317  # called by the trap below
forward_stop() {
  echo "local_multiprocess.sh: stopping: SIGTERM to every process (each checkpoints first)" >&2
  kill -TERM "${pids[@]}" 2> /dev/null || true
}
trap forward_stop INT TERM

echo "local_multiprocess.sh: $NUM_PROCESSES process(es) x $DEVICES_PER_PROCESS $PLATFORM device(s)," \
  "coordinator 127.0.0.1:$PORT; processes 1..$((NUM_PROCESSES - 1)) log to $LOG_DIR" >&2
for ((i = 0; i < NUM_PROCESSES; i++)); do
  # one process's environment: the three JAXSTAGE_* variables jaxstage's distributed start-up reads
  env_vars=("JAXSTAGE_COORDINATOR=127.0.0.1:$PORT" "JAXSTAGE_NUM_PROCESSES=$NUM_PROCESSES" "JAXSTAGE_PROCESS_ID=$i")
  if [[ "$PLATFORM" == cpu ]]; then
    env_vars+=(JAX_PLATFORMS=cpu "XLA_FLAGS=${XLA_FLAGS:-} --xla_force_host_platform_device_count=$DEVICES_PER_PROCESS")
  else
    env_vars+=("CUDA_VISIBLE_DEVICES=$(seq -s, $((i * DEVICES_PER_PROCESS)) $(((i + 1) * DEVICES_PER_PROCESS - 1)))")
  fi
  if ((i == 0)); then
    env "${env_vars[@]}" "${command[@]}" train "$@" &
  else
    env "${env_vars[@]}" "${command[@]}" train "$@" > "$LOG_DIR/process_$i.log" 2>&1 &
  fi
  pids+=("$!")
done

# Wait for every process; after the first failure, give the rest GRACE_SECONDS, then kill them.
status=0
failed_at=""
running=("${pids[@]}")
while ((${#running[@]} > 0)); do
  still=()
  for pid in "${running[@]}"; do
    if kill -0 "$pid" 2> /dev/null; then
      still+=("$pid")
      continue
    fi
    code=0
    wait "$pid" || code=$?
    if ((code != 0 && status == 0)); then
      status=$code
      failed_at=$SECONDS
      echo "local_multiprocess.sh: a process exited with status $code; waiting up to ${GRACE_SECONDS}s for the others" >&2
    fi
  done
  running=("${still[@]+"${still[@]}"}")
  if [[ -n "$failed_at" ]] && ((${#running[@]} > 0 && SECONDS - failed_at > GRACE_SECONDS)); then
    echo "local_multiprocess.sh: killing ${#running[@]} process(es) still running ${GRACE_SECONDS}s after the failure" >&2
    kill -KILL "${running[@]}" 2> /dev/null || true
  fi
  if ((${#running[@]} > 0)); then
    sleep 1
  fi
done
exit "$status"

"""jaxstage.distributed.detect: flags, env variables, SLURM (every GPU of a node for one task per
node), TPU VM slices, single process; one-line errors for partial or bad settings."""

import pytest

from jaxstage.distributed import DistributedSpec, complete_checkpoints, detect, failure_message


def test_single_process_needs_nothing():
    assert detect({}) is None
    assert detect({"SLURM_JOB_ID": "7", "SLURM_NTASKS": "1"}) is None  # one task: nothing to join
    assert detect({"TPU_WORKER_HOSTNAMES": "localhost"}) is None  # single-host TPU VM


def test_flags_win_over_env_and_slurm():
    env = {"JAXSTAGE_COORDINATOR": "other:1", "JAXSTAGE_NUM_PROCESSES": "8", "JAXSTAGE_PROCESS_ID": "3",
           "SLURM_JOB_ID": "1", "SLURM_NTASKS": "4"}
    spec = detect(env, coordinator="127.0.0.1:1234", num_processes=2, process_id=1)
    assert spec == DistributedSpec("flags", "127.0.0.1:1234", 2, 1)
    assert spec.kwargs() == {"coordinator_address": "127.0.0.1:1234", "num_processes": 2, "process_id": 1}
    assert detect(env) == DistributedSpec("env", "other:1", 8, 3)


@pytest.mark.parametrize("kwargs, message", [
    (dict(coordinator="h:1", num_processes=2), "missing --process-id"),
    (dict(coordinator="host", num_processes=2, process_id=0), "must be HOST:PORT"),
    (dict(coordinator="h:1", num_processes=2, process_id=2), r"--process-id=2 must be in \[0, --num-processes=2\)"),
])
def test_partial_or_bad_flags_are_one_line_errors(kwargs, message):
    with pytest.raises(ValueError, match=message):
        detect({}, **kwargs)


def test_bad_env_value_names_the_variable():
    with pytest.raises(ValueError, match="JAXSTAGE_NUM_PROCESSES='two' is not an integer"):
        detect({"JAXSTAGE_COORDINATOR": "h:1", "JAXSTAGE_NUM_PROCESSES": "two", "JAXSTAGE_PROCESS_ID": "0"})


def test_slurm_one_task_per_node_sees_every_gpu_of_its_node():
    env = {"SLURM_JOB_ID": "9", "SLURM_NTASKS": "4", "SLURM_TASKS_PER_NODE": "1(x4)", "SLURM_LOCALID": "0",
           "CUDA_VISIBLE_DEVICES": "0,1,2,3,4,5,6,7"}
    spec = detect(env)
    assert spec.source == "slurm" and spec.local_device_ids == tuple(range(8))
    assert spec.kwargs() == {"local_device_ids": list(range(8))}  # coordinator/count/id: JAX reads SLURM
    assert detect({**env, "CUDA_VISIBLE_DEVICES": "", "SLURM_GPUS_ON_NODE": "4"}).local_device_ids == (0, 1, 2, 3)


def test_slurm_one_task_per_gpu_uses_its_local_id():
    env = {"SLURM_JOB_ID": "9", "SLURM_NTASKS": "16", "SLURM_NTASKS_PER_NODE": "8", "SLURM_LOCALID": "5"}
    assert detect(env).local_device_ids == (5,)
    assert detect({**env, "CUDA_VISIBLE_DEVICES": "0,1,2,3,4,5,6,7"}).local_device_ids == (5,)
    # --gpus-per-task=1: the task sees only its own GPU, which JAX numbers 0
    assert detect({**env, "CUDA_VISIBLE_DEVICES": "5"}).local_device_ids == (0,)
    with pytest.raises(ValueError, match="SLURM_LOCALID=5 but this task sees 2 GPUs"):
        detect({**env, "CUDA_VISIBLE_DEVICES": "4,5"})


def test_multi_host_tpu_slice_lets_jax_detect():
    assert detect({"TPU_WORKER_HOSTNAMES": "t1,t2,t3,t4"}) == DistributedSpec("tpu")
    assert DistributedSpec("tpu").kwargs() == {}


def test_failure_message_names_process_error_and_newest_finished_checkpoint(tmp_path):
    checkpoints = tmp_path / "checkpoints"
    for name in ("2", "4", "6.orbax-checkpoint-tmp-1732", "notes"):
        (checkpoints / name).mkdir(parents=True)
    assert complete_checkpoints(checkpoints) == [2, 4]  # an interrupted save is not a checkpoint
    message = failure_message(RuntimeError("Gloo AllGather failed: Connection closed by peer\n<stack>"), checkpoints)
    assert message.startswith("process 0 of 1 stopped: RuntimeError: Gloo AllGather failed: Connection closed by peer (")
    assert f"newest finished checkpoint: step 4 in {checkpoints}" in message
    assert "<stack>" not in message and "\n" not in message
    assert f"no finished checkpoint in {tmp_path / 'none'}" in failure_message(ValueError("x"), tmp_path / "none")

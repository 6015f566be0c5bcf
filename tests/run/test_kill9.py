"""kill -9 at any moment (issue 17): a tiny run is killed with SIGKILL at random moments and rerun each
time; after the last attempt finishes, its metrics.jsonl is the uninterrupted run's, bit for bit, each
step exactly once, and its final checkpoint restores to the uninterrupted run's state, bit for bit.

Each test is a CHAIN of attempts on one run directory: start, kill, rerun (= resume), kill, ..., then the
last attempt runs to the end, so every rerun is both a resume test and the next kill trial. Kill moments
come from a seeded ``random.Random`` (the seed is printed):

* ``startup``: a random fraction of the previous attempt's start-up time after the process starts
  (imports, restore, compile; before any new step);
* ``early``: as soon as the attempt writes its first metrics row (before its first checkpoint);
* ``training``: after the attempt has written 1-15 new metrics rows, plus a random delay of up to 0.3 s
  (any moment of a step, a metrics write or a save);
* ``saving``: the checkpoint folder is polled every ~2 ms and the process is killed as soon as the
  attempt's 1st-4th new ``*.orbax-checkpoint-tmp*`` folder appears. A trial counts as
  "in flight" only if a temporary folder made by that attempt still exists right after the kill.

A summary (seed, every trial, counts, wall time) is printed (``-s``) and written to
``kill9_summary.json`` in the test's tmp dir.
"""

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
TINY = str(ROOT / "configs" / "tiny_t2a.py")
STEPS = 60
SETS = [f"train.steps={STEPS}", "train.log_every=1", "train.ckpt_every=3", "train.ckpt_keep=100",
        "train.progress_bar=false", "codec.stats_examples=4"]
TMP_MARK = ".orbax-checkpoint-tmp"
POLL_S = 0.002
MIN_IN_FLIGHT = 3  # per chain; the chain adds "saving" trials (at most EXTRA_SAVING) until it has them
EXTRA_SAVING = 4


def _command(workdir: Path) -> list[str]:
    return [sys.executable, "-m", "jaxstage.cli", "train", "--config", TINY, "--workdir", str(workdir),
            *[a for kv in SETS for a in ("--set", kv)]]


def _env() -> dict[str, str]:
    return {**os.environ, "JAX_PLATFORMS": "cpu", "XLA_FLAGS": "--xla_force_host_platform_device_count=1"}


def _tmp_entries(checkpoints: Path) -> dict[str, tuple[int, int]]:
    """Orbax's temporary folders of unfinished saves, by name, with an identity (inode, ctime) so a
    folder recreated under the same name counts as new."""
    found = {}
    try:
        names = os.listdir(checkpoints)
    except FileNotFoundError:
        return found
    for name in names:
        if TMP_MARK in name:
            try:
                st = os.stat(checkpoints / name)
            except FileNotFoundError:
                continue
            found[name] = (st.st_ino, st.st_ctime_ns)
    return found


def _new_tmp(checkpoints: Path, before: dict[str, tuple[int, int]]) -> list[str]:
    return sorted(name for name, ident in _tmp_entries(checkpoints).items() if before.get(name) != ident)


def _finished_steps(checkpoints: Path) -> list[int]:
    return sorted(int(p.name) for p in checkpoints.iterdir() if p.name.isdigit()) if checkpoints.is_dir() else []


def _rows(workdir: Path) -> list[dict]:
    rows = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if k != "steps_per_s"} for r in rows]


class _Grower:
    """Reads only what was appended to a file since the last poll (cheap at a 2 ms poll)."""

    def __init__(self, path: Path):
        self.path, self.offset, self.text = path, 0, ""

    def poll(self) -> str:
        try:
            size = os.stat(self.path).st_size
        except FileNotFoundError:
            return ""
        if size < self.offset:  # rewritten (a resume moved rows aside)
            self.offset, self.text = 0, ""
        if size == self.offset:
            return ""
        with open(self.path, "rb") as f:
            f.seek(self.offset)
            chunk = f.read(size - self.offset).decode(errors="replace")
        self.offset = size
        self.text += chunk
        return chunk


def _watch(proc, trial: dict | None, started: float, timeout: float, stderr: _Grower, metrics: _Grower,
           checkpoints: Path, tmp_before: dict) -> dict:
    """Poll the attempt every ~2 ms; SIGKILL it at the trial's moment (None: wait for it to end)."""
    seen = {"killed": False, "compiled_at": None, "new_rows": 0}  # compiled: after restore and the rows rewrite
    kill_due = started + trial["delay_s"] if trial is not None and trial["mode"] == "startup" else None
    seen_tmp: set[str] = set()
    while proc.poll() is None:
        now = time.monotonic()
        assert now - started < timeout, f"the attempt ran past {timeout}s:\n{stderr.text[-3000:]}"
        stderr.poll()
        if seen["compiled_at"] is None:
            if "step compiled in" in stderr.text:
                seen["compiled_at"] = now - started
                metrics.poll()  # rows from before this attempt's first step
        else:
            seen["new_rows"] += metrics.poll().count("\n")
        if trial is not None and kill_due is None:
            mode = trial["mode"]
            if mode == "early" and seen["new_rows"] >= 1:
                kill_due = now
            elif mode == "training" and seen["new_rows"] >= trial["rows"]:
                kill_due = now + trial["delay_s"]
            elif mode == "saving":
                seen_tmp |= set(_new_tmp(checkpoints, tmp_before))
                if len(seen_tmp) >= trial["nth_save"]:
                    kill_due = now
        if kill_due is not None and now >= kill_due:
            proc.send_signal(signal.SIGKILL)
            seen["killed"] = True
            break
        time.sleep(POLL_S)
    return seen


def _attempt(workdir: Path, index: int, trial: dict | None, timeout: float) -> dict:
    """Start one attempt; kill it as ``trial`` says (None: let it finish). Returns its record."""
    checkpoints = workdir / "checkpoints"
    err_path = workdir.parent / f"attempt{index:02d}.stderr"
    tmp_before = _tmp_entries(checkpoints)
    started = time.monotonic()
    with open(err_path, "w") as err:
        proc = subprocess.Popen(_command(workdir), env=_env(), cwd=ROOT, stdout=subprocess.DEVNULL, stderr=err)
    stderr = _Grower(err_path)
    try:
        seen = _watch(proc, trial, started, timeout, stderr, _Grower(workdir / "metrics.jsonl"), checkpoints,
                      tmp_before)
    except BaseException:  # a failed assertion or an interrupt: leave nothing running
        proc.kill()
        proc.wait()
        raise
    rc = proc.wait()
    seconds = time.monotonic() - started
    in_flight = _new_tmp(checkpoints, tmp_before) if seen["killed"] else []  # right after the kill
    text = err_path.read_text()
    start = [line.split("; ")[-1] for line in text.splitlines() if "; resuming at step" in line or
             "; starting fresh" in line]
    return {
        "attempt": index, **(trial or {"mode": "final"}), "killed": seen["killed"], "rc": rc,
        "seconds": round(seconds, 2),
        "startup_s": None if seen["compiled_at"] is None else round(seen["compiled_at"], 2),
        "new_rows_seen": seen["new_rows"], "in_flight": bool(in_flight), "tmp_after_kill": in_flight,
        "newest_finished": (_finished_steps(checkpoints) or [None])[-1],
        "started": start[0] if start else None, "stderr": text,
    }


def _plan(rng: random.Random, startup_guess: float) -> list[dict]:
    """The chain's kill trials: one right after the first metrics row (before the first checkpoint),
    then start-up, training and saving kills in a seeded random order."""
    modes = ["startup"] * 4 + ["training"] * 3 + ["saving"] * 3
    rng.shuffle(modes)
    return [_trial(rng, "early", startup_guess)] + [_trial(rng, m, startup_guess) for m in modes]


def _trial(rng: random.Random, mode: str, startup_guess: float) -> dict:
    if mode == "startup":
        return {"mode": mode, "fraction": round(rng.uniform(0.03, 1.0), 3)}  # of the last start-up time
    if mode == "training":
        return {"mode": mode, "rows": rng.randint(1, 15), "delay_s": round(rng.uniform(0.0, 0.3), 3)}
    if mode == "saving":
        return {"mode": mode, "nth_save": rng.randint(1, 4)}
    return {"mode": mode}


def _leave_headroom(trial: dict, workdir: Path) -> None:
    """Near the end of the run, kill sooner, so the run cannot finish before its planned kills."""
    newest = (_finished_steps(workdir / "checkpoints") or [0])[-1]
    headroom = STEPS - newest - 16  # steps this trial may advance
    if "rows" in trial:
        trial["rows"] = max(1, min(trial["rows"], headroom - 4))
    if "nth_save" in trial:
        trial["nth_save"] = max(1, min(trial["nth_save"], headroom // 3 - 1))


def _shared_dir(tmp_path_factory, worker_id: str) -> Path:
    """A folder every xdist worker of this session shares (the session's own basetemp without xdist)."""
    base = tmp_path_factory.getbasetemp()
    return base if worker_id == "master" else base.parent


def _reference(tmp_path_factory, worker_id: str) -> Path:
    """The uninterrupted run, made once per session (under a file lock, shared by the xdist workers)."""
    from filelock import FileLock

    shared = _shared_dir(tmp_path_factory, worker_id)
    run = shared / "kill9_reference"
    with FileLock(str(shared / "kill9_reference.lock")):
        if not (run / "DONE").exists():
            shutil.rmtree(run, ignore_errors=True)
            done = subprocess.run(_command(run), env=_env(), cwd=ROOT, capture_output=True, text=True, timeout=600,
                                  check=False)
            assert done.returncode == 0, done.stderr[-3000:]
            (run / "DONE").write_text("")
    return run


def _restore_state(step_dir: Path):
    import orbax.checkpoint as ocp

    return ocp.StandardCheckpointer().restore(step_dir / "state")


def _chain(tmp_path: Path, tmp_path_factory, worker_id: str, seed: int) -> dict:
    wall = time.monotonic()
    rng = random.Random(seed)
    print(f"\n[kill9] seed={seed} steps={STEPS} {' '.join(SETS)}")
    workdir = tmp_path / "run"
    startup = 12.0  # seconds to a compiled step; replaced by each attempt's measurement
    plan = _plan(rng, startup)
    records = []
    extra = 0
    while plan:
        trial = plan.pop(0)
        if trial["mode"] == "startup":
            trial["delay_s"] = round(trial["fraction"] * startup, 3)
        _leave_headroom(trial, workdir)
        record = _attempt(workdir, len(records), trial, timeout=240)
        records.append(record)
        if record["startup_s"]:
            startup = record["startup_s"]
        print(f"[kill9] attempt {record['attempt']:2d} {trial['mode']:8s} rc={record['rc']:3d} "
              f"{record['seconds']:5.1f}s {record['started'] or 'killed before restoring'} rows={record['new_rows_seen']} "
              f"in_flight={record['tmp_after_kill'] or '-'} newest_finished={record['newest_finished']}")
        if not record["killed"]:
            assert record["rc"] == 0, f"attempt {record['attempt']} failed (rc {record['rc']}):\n" \
                                      f"{record['stderr'][-3000:]}"
            break  # the run finished before this trial's moment came: nothing left to kill
        assert record["rc"] == -signal.SIGKILL, record["rc"]
        if not plan and sum(r["in_flight"] for r in records) < MIN_IN_FLIGHT and extra < EXTRA_SAVING:
            extra += 1
            plan.append(_trial(rng, "saving", startup))
    final = _attempt(workdir, len(records), None, timeout=300) if records[-1]["killed"] else records.pop()
    print(f"[kill9] attempt {final['attempt']:2d} final    rc={final['rc']:3d} {final['seconds']:5.1f}s "
          f"{final['started']}")
    assert final["rc"] == 0, f"the final resume failed (rc {final['rc']}):\n{final['stderr'][-3000:]}"
    for record in records + [final]:
        assert "Traceback" not in record["stderr"], f"attempt {record['attempt']}:\n{record['stderr'][-3000:]}"

    reference = _reference(tmp_path_factory, worker_id)
    rows, want = _rows(workdir), _rows(reference)
    steps = [r["step"] for r in rows]
    assert steps == list(range(1, STEPS + 1)), f"metrics.jsonl steps after kills and resumes: {steps}"
    for got, expected in zip(rows, want):
        assert got == expected, f"step {got['step']} differs from the uninterrupted run"
    assert rows == want

    # the final checkpoint verifies, restores, and holds the uninterrupted run's state bit for bit
    import jax
    import numpy as np

    from jaxstage.run.checkpoint import Checkpointer

    checkpointer = Checkpointer(workdir / "checkpoints", keep=100, async_save=False)
    assert checkpointer.latest_step() == STEPS
    checkpointer.verify(STEPS)
    got_state = _restore_state(workdir / "checkpoints" / str(STEPS))
    want_state = _restore_state(reference / "checkpoints" / str(STEPS))
    assert jax.tree.structure(got_state) == jax.tree.structure(want_state)
    for got, expected in zip(jax.tree.leaves(got_state), jax.tree.leaves(want_state)):
        np.testing.assert_array_equal(np.asarray(got), np.asarray(expected))
    checkpointer.manager.close()

    trials = [{k: v for k, v in r.items() if k != "stderr"} for r in records]
    summary = {
        "seed": seed, "steps": STEPS, "sets": SETS, "trials": len(trials),
        "in_flight": sum(r["in_flight"] for r in trials),
        "by_mode": {m: sum(r["mode"] == m for r in trials) for m in ("startup", "early", "training", "saving")},
        "wall_s": round(time.monotonic() - wall, 1),
        "attempts": trials + [{k: v for k, v in final.items() if k != "stderr"}],
    }
    (tmp_path / "kill9_summary.json").write_text(json.dumps(summary, indent=1))
    print(f"[kill9] seed={seed}: {summary['trials']} kill trials, {summary['in_flight']} with a save in flight, "
          f"modes {summary['by_mode']}, {summary['wall_s']}s; summary in {tmp_path / 'kill9_summary.json'}")
    return summary


@pytest.mark.slow
def test_kill9_chain_a(tmp_path, tmp_path_factory, worker_id):
    summary = _chain(tmp_path, tmp_path_factory, worker_id, seed=1701)
    assert summary["trials"] >= 10 and summary["in_flight"] >= MIN_IN_FLIGHT, summary


@pytest.mark.slow
def test_kill9_chain_b(tmp_path, tmp_path_factory, worker_id):
    summary = _chain(tmp_path, tmp_path_factory, worker_id, seed=4242)
    assert summary["trials"] >= 10 and summary["in_flight"] >= MIN_IN_FLIGHT, summary

"""Periodic evaluation (eval.every) into metrics.jsonl, `jaxstage eval --task tta` and `jaxstage sample`
on a tiny text-to-audio run."""

import json
import sys
from pathlib import Path

import numpy as np
import pytest

from jaxstage.cli import main
from jaxstage.config import load_config
from jaxstage.run.report import read_metrics
from jaxstage.train.trainer import train

ROOT = Path(__file__).resolve().parents[2]
TINY = str(ROOT / "configs" / "tiny_t2a.py")


@pytest.fixture(scope="module")
def t2a_run(tmp_path_factory):
    run = tmp_path_factory.mktemp("tta") / "run"
    cfg = load_config(TINY, ["train.steps=4", "train.log_every=2", "train.progress_bar=false", "eval.every=2",
                             "eval.num=4", "codec.stats_examples=4", "data.num_examples=64"])
    train(cfg, run)
    return run


def test_periodic_eval_lines_are_logged_and_merged_by_step(t2a_run):
    lines = [json.loads(x) for x in (t2a_run / "metrics.jsonl").read_text().splitlines()]
    evals = [r for r in lines if "eval_fd_spectral" in r]
    assert [r["step"] for r in evals] == [2, 4]
    for r in evals:
        assert set(r) == {"step", "eval_fd_spectral", "eval_acc_source", "eval_acc_pitch_band", "eval_acc_rhythm",
                          "eval_acc_envelope"}
        assert r["eval_fd_spectral"] >= 0 and all(0 <= r[k] <= 1 for k in r if k.startswith("eval_acc"))
    merged = read_metrics(t2a_run)
    assert [r["step"] for r in merged] == [2, 4]
    assert all("loss" in r and "eval_fd_spectral" in r for r in merged)


def test_eval_tta_cli_held_out_and_prompt_file(t2a_run, tmp_path, capsys):
    out = tmp_path / "tta.json"
    assert main(["eval", "--task", "tta", "--workdir", str(t2a_run), "--n", "4", "--steps", "2", "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["count"] == 4 and report["steps"] == 2
    assert set(report["metrics"]) == {"attribute_accuracy", "fd_spectral"}
    assert np.isfinite(report["metrics"]["fd_spectral"])
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a high sine tone\n\na low square tone with fast pulses\n")
    assert main(["eval", "--task", "tta", "--workdir", str(t2a_run), "--prompts", str(prompts), "--steps", "2",
                 "--out", str(tmp_path / "free.json")]) == 0
    free = json.loads((tmp_path / "free.json").read_text())
    assert free["count"] == 2 and free["metrics"] == {}  # no references, no models: nothing reference-based
    bad = tmp_path / "bad.txt"
    bad.write_bytes(b"\xff\xfe a caption\n")
    for argv, message in [(["--prompts", str(bad)], "not UTF-8"),
                          (["--prompts", str(tmp_path / "none.txt")], "prompts file not found"),
                          (["--n", "0"], "at least one prompt")]:
        capsys.readouterr()
        assert main(["eval", "--task", "tta", "--workdir", str(t2a_run)] + argv) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and message in err, err


def test_eval_tta_with_random_config_ast_and_clap(t2a_run, tmp_path):
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    sys.path.insert(0, str(ROOT / "tests" / "data"))
    from hf_tiny import save_tiny_ast, save_tiny_clap

    ast_dir, clap_dir = save_tiny_ast(tmp_path / "ast"), save_tiny_clap(tmp_path / "clap")
    out = tmp_path / "tta.json"
    assert main(["eval", "--task", "tta", "--workdir", str(t2a_run), "--n", "4", "--steps", "2",
                 "--ast", str(ast_dir), "--clap", str(clap_dir), "--out", str(out)]) == 0
    m = json.loads(out.read_text())["metrics"]
    for key in ("fd_spectral", "fd_ast", "fd_clap", "kl_ref_gen", "kl_gen_ref"):
        assert np.isfinite(m[key]) and m[key] >= 0, key
    assert 1.0 <= m["is_ast"] <= 5.0 and 1.0 <= m["is_ast_reference"] <= 5.0  # 5 classes in the tiny AST
    assert -1.0 <= m["clap_score"] <= 1.0 and -1.0 <= m["clap_score_reference"] <= 1.0


def test_sample_cli_writes_numbered_wavs_and_leaves_the_config_alone(t2a_run, tmp_path, capsys):
    import soundfile as sf

    before = (t2a_run / "config.json").read_text()
    out = tmp_path / "clip.wav"
    assert main(["sample", "--workdir", str(t2a_run), "--prompt", "a high sine tone", "--prompt", "a low square tone",
                 "--out", str(out), "--sampler", "heun", "--steps", "2", "--cfg", "1"]) == 0
    paths = [tmp_path / "clip_0.wav", tmp_path / "clip_1.wav"]
    lines = capsys.readouterr().err.strip().splitlines()
    assert [line.split(" (peak ")[0] for line in lines] == [f"wrote {p}" for p in paths]
    for path in paths:
        info = sf.info(str(path))
        assert info.subtype == "PCM_16" and info.frames > 0
    assert (t2a_run / "config.json").read_text() == before and not out.exists()
    assert main(["sample", "--workdir", str(t2a_run), "--prompt", "x", "--out", str(out), "--steps", "0"]) == 2
    assert "--steps=0 must be >= 1" in capsys.readouterr().err


def test_guidance_flags_reach_the_sampler_for_one_call(t2a_run, tmp_path, capsys, monkeypatch):
    """The rule each call traces into cfg_batched (the tiny run's D_c and D_u are too close after 4 steps for
    the rules to differ audibly: the formulas are tested in tests/diffusion/test_guidance_rules.py)."""
    from jaxstage.diffusion import guidance_rules, samplers

    traced = []

    def recording_combine(d_cond, d_uncond, scale, rule):
        traced.append(rule)
        return guidance_rules.combine(d_cond, d_uncond, scale, rule)

    monkeypatch.setattr(samplers, "combine", recording_combine)
    before = (t2a_run / "config.json").read_text()
    common = ["--prompt", "a high sine tone", "--steps", "2", "--cfg", "3"]
    for flags, rule in [([], guidance_rules.CFG),
                        (["--guidance", "apg", "--apg-eta", "0.5"], guidance_rules.GuidanceRule("apg", apg_eta=0.5)),
                        (["--guidance", "rescale", "--cfg-rescale", "1"],
                         guidance_rules.GuidanceRule("rescale", rescale_phi=1.0))]:
        traced.clear()
        assert main(["sample", "--workdir", str(t2a_run), "--out", str(tmp_path / "x.wav")] + common + flags) == 0
        assert traced and set(traced) == {rule}
    out = tmp_path / "apg.json"
    traced.clear()
    assert main(["eval", "--task", "tta", "--workdir", str(t2a_run), "--n", "4", "--steps", "2", "--out", str(out),
                 "--guidance", "apg", "--apg-norm-threshold", "3"]) == 0
    assert set(traced) == {guidance_rules.GuidanceRule("apg", apg_norm_threshold=3.0)}
    assert json.loads(out.read_text())["guidance"] == {"kind": "apg", "rescale_phi": 0.7, "apg_eta": 0.0,
                                                        "apg_norm_threshold": 3.0}
    assert (t2a_run / "config.json").read_text() == before
    for argv, message in [(["sample", "--prompt", "x", "--out", str(tmp_path / "x.wav"), "--apg-eta", "0.5"],
                           "sample.apg_eta=0.5 is given but only sample.guidance=apg reads it"),
                          (["eval", "--task", "tta", "--guidance", "rescale", "--apg-norm-threshold", "1"],
                           "sample.apg_norm_threshold=1.0 is given but only sample.guidance=apg reads it"),
                          (["eval", "--task", "sr", "--guidance", "apg"], "--guidance is for --task tta")]:
        capsys.readouterr()
        assert main(argv[:1] + ["--workdir", str(t2a_run)] + argv[1:]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and message in err, err

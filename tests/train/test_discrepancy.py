"""The `output` discrepancy (SPEC §3.1): φ of the decoded clean prediction against φ of the clip."""

import json
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxstage.config import ConfigError, load_config
from jaxstage.models.codecs import denormalize
from jaxstage.models.ssl import resample_frames
from jaxstage.stage.guidance import alignment_loss
from jaxstage.train.trainer import fresh_state, train
from jaxstage.train.state import build_experiment
from jaxstage.train.step import make_discrepancy

ROOT = Path(__file__).resolve().parents[2]
TINY = str(ROOT / "configs" / "tiny_t2a.py")
OUTPUT = ["regime.mode=adaptive", "regime.discrepancy=output", "guidance.lambda0=0", "regime.every=5",
          "regime.monitor_size=8"]


def test_output_discrepancy_needs_no_projector_and_reads_the_decoded_prediction():
    cfg = load_config(TINY, OUTPUT)
    exp = build_experiment(cfg)
    assert exp.recipe.monitor_enabled and exp.recipe.projector_dim == 0
    state = fresh_state(exp)
    assert state.monitor is not None
    assert not any("projector" in str(path) for path, _ in jax.tree_util.tree_leaves_with_path(state.params))
    d = float(jax.jit(make_discrepancy(exp))(state.params, state.monitor, state.codec_stats))
    assert 0.0 < d < 2.0

    # the same path with the prediction replaced by the clean features: the stft codec inverts
    # exactly, so φ(decode(x₀)) reproduces the targets and D falls to its floor, the share of silent
    # (all-zero) target frames, where the cosine is 0 by convention
    monitor, stats = state.monitor, state.codec_stats
    audio = exp.codec.decode(denormalize(monitor.x0, stats), cfg.num_samples)
    features = resample_frames(exp.recipe.ssl.features(audio), monitor.targets.shape[1])
    np.testing.assert_allclose(features, monitor.targets, atol=2e-3)
    silent = float(jnp.mean(jnp.all(monitor.targets == 0, axis=-1)))
    oracle = float(alignment_loss(features, monitor.targets))
    assert abs(oracle - silent) < 1e-3 and oracle < d


def test_output_discrepancy_falls_as_the_model_learns_and_drives_p(tmp_path):
    cfg = load_config(TINY, OUTPUT + ["train.steps=150", "train.log_every=5", "train.ckpt_every=1000",
                                      "train.progress_bar=false", "sample.every=0"])
    result = train(cfg, tmp_path / "run")
    assert result.compile_count == 1
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    d = [r["discrepancy"] for r in records]
    assert all(np.isfinite(d))
    assert d[-1] < 0.9 * d[0], f"output discrepancy did not fall: {d[0]:.3f} -> {d[-1]:.3f}"
    progress = [r["progress"] for r in records]
    assert progress == sorted(progress) and progress[-1] > 0.0
    assert all(r["ssl_weight"] == 0.0 for r in records)


def test_alignment_discrepancy_still_requires_alignment():
    with pytest.raises(ConfigError, match="guidance.lambda0"):
        load_config(TINY, ["regime.mode=adaptive", "regime.discrepancy=alignment", "guidance.lambda0=0"])

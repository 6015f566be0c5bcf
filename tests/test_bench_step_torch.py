"""bench/step.py --torch-side-by-side at a tiny size: stable-audio-tools' DiT in torch eager vs
jaxstage's jitted DiT step give positive finite timings and ratios, and a torch.compile failure
is reported, not raised. Skips without torch + stable-audio-tools (fails under CI, as the parity
tests in tests/export do)."""

import math
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
sys.path.insert(0, str(ROOT / "tests" / "tools" / "export"))

import step as bench_step  # noqa: E402
from sat_torch import require_reference  # noqa: E402  (skip locally, fail under CI without the reference)

from jaxstage.config import load_config  # noqa: E402
from jaxstage.models.codecs import stft_num_frames  # noqa: E402

TINY = bench_step.DiTSize(width=64, depth=1, heads=2, seq=16, batch=2, cond_tokens=4, cond_dim=32, io_channels=8)


def _positive_finite(x) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x) and x > 0


def test_side_by_side_reports_timings_ratios_and_compile_failure(monkeypatch):
    torch, _ = require_reference()

    def broken_compile(*args, **kwargs):
        raise RuntimeError("no inductor here\nsecond line")

    # a real torch.compile costs minutes on a 2-core CPU: exercise the failure path instead
    monkeypatch.setattr(torch, "compile", broken_compile)
    result = bench_step.torch_side_by_side(TINY, torch_steps=1, jax_steps=1)

    assert result["config"]["width"] == 64 and result["config"]["activation_checkpointing"] is False
    for side in ("torch_eager", "jax_jit"):
        assert _positive_finite(result[side]["step_ms"]), result[side]
        assert math.isfinite(result[side]["loss"])
    assert _positive_finite(result["jax_jit"]["compile_s"])
    assert _positive_finite(result["torch_eager"]["first_step_s"])
    assert _positive_finite(result["ratio_torch_eager_over_jax"])
    assert result["ratio_torch_eager_over_jax"] == pytest.approx(
        result["torch_eager"]["step_ms"] / result["jax_jit"]["step_ms"], rel=0.01)
    assert result["torch_compile"] == {"failed": "RuntimeError: no inductor here"}
    assert len(result["gemm"]) == 4 and all(_positive_finite(r["xla_gflops"]) and _positive_finite(r["torch_gflops"])
                                            for r in result["gemm"])
    assert _positive_finite(result["attention"]["jax_ms"]) and _positive_finite(result["attention"]["torch_ms"])
    assert result["ratio_torch_compile_over_jax"] is None


def test_both_sides_build_the_same_dit():
    require_reference()
    from flax import nnx

    from jaxstage.models.dit import DiffusionTransformer, count_params

    torch_params = sum(p.numel() for p in bench_step._torch_dit(TINY).parameters())
    jax_model = DiffusionTransformer(io_channels=TINY.io_channels, embed_dim=TINY.width, depth=TINY.depth,
                                     num_heads=TINY.heads, cond_token_dim=TINY.cond_dim, rngs=nnx.Rngs(0))
    assert torch_params == count_params(jax_model)


def test_recipe_overrides_match_the_dit_size():
    size = bench_step.DiTSize()
    cfg = load_config(str(ROOT / "configs" / "synth_t2a_static.py"), bench_step.recipe_overrides(size))
    assert stft_num_frames(cfg.num_samples, cfg.codec.n_fft, cfg.codec.hop_length) == size.seq
    assert (cfg.model.embed_dim, cfg.model.depth, cfg.model.num_heads) == (size.width, size.depth, size.heads)
    assert (cfg.train.batch_size, cfg.codec.n_mels) == (size.batch, size.io_channels)
    assert (cfg.data.text_max_length, cfg.text.width) == (size.cond_tokens, size.cond_dim)

"""Shared helpers for tests that run stable-audio-tools' own PyTorch DiT.

Without torch + stable-audio-tools the tests skip locally; under CI (`CI=true`, where `.ci/run`
installs both) a missing reference is a failure, so parity can never pass by being skipped.
"""

import os

import numpy as np
import pytest


def require_reference():
    """(torch, DiffusionTransformer class), or skip (fail under CI) when the reference is absent."""
    from jaxstage.tools.export.sat_reference import load_dit_class

    try:
        dit_cls = load_dit_class()
    except ImportError as err:
        if os.environ.get("CI"):
            pytest.fail(f"the PyTorch reference must be installed in CI: {err}")
        pytest.skip(str(err))
    import torch

    return torch, dit_cls


def torch_forward(torch, model, x, t, *, cross=None, global_cond=None, concat=None) -> np.ndarray:
    """stable-audio-tools DiT forward on channels-last numpy inputs -> channels-last numpy output."""
    def tensor(a):
        return None if a is None else torch.from_numpy(np.asarray(a, np.float32))

    model.eval()
    with torch.no_grad():
        out = model(tensor(x).transpose(1, 2), tensor(t), cross_attn_cond=tensor(cross),
                    global_embed=tensor(global_cond),
                    input_concat_cond=None if concat is None else tensor(concat).transpose(1, 2))
    return out.transpose(1, 2).numpy()

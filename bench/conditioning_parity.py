"""Number-conditioner and routing parity with stable-audio-tools 0.0.19 at SAO 1.0's widths.

    python bench/conditioning_parity.py      # prints the errors, writes bench/results/conditioning_parity.json

Random weights carried across with the test helpers of tests/models/test_conditioning.py; fp32 on CPU.
"""

import json
import sys
import types
from pathlib import Path

import jax.numpy as jnp
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "models"))

from test_conditioning import SAO_ROUTING, _number_from_torch  # noqa: E402

from jaxstage.models.conditioning import route  # noqa: E402
from jaxstage.tools.export.sat_reference import load_conditioning_classes  # noqa: E402


def main() -> None:
    import torch

    number_cls, wrapper_cls = load_conditioning_classes()
    torch.manual_seed(0)
    results = {}
    values = [0.0, 3.5, 47.55, 511.9, 600.0, -2.0]
    for dim in (24, 768):
        theirs = number_cls(output_dim=dim, min_val=0, max_val=512).eval()
        with torch.no_grad():
            expected, _ = theirs(values, device="cpu")
        got = _number_from_torch(theirs, dim, 0, 512)(jnp.asarray(values, jnp.float32))[0]
        results[f"number_conditioner_d{dim}"] = float(np.max(np.abs(np.asarray(got) - expected.numpy())))
    dim = 768
    start, total = (number_cls(output_dim=dim, min_val=0, max_val=512).eval() for _ in range(2))
    prompt = torch.randn(2, 128, dim)
    mask = torch.ones(2, 128, dtype=torch.bool)
    mask[1, 40:] = False
    with torch.no_grad():
        tensors = {"prompt": (prompt * mask[..., None], mask), "seconds_start": start([0.0, 5.0], device="cpu"),
                   "seconds_total": total([47.5, 10.0], device="cpu")}
    ours = {"prompt": (jnp.asarray(tensors["prompt"][0].numpy()), jnp.asarray(mask.numpy())),
            "seconds_start": _number_from_torch(start, dim, 0, 512)(jnp.asarray([0.0, 5.0])),
            "seconds_total": _number_from_torch(total, dim, 0, 512)(jnp.asarray([47.5, 10.0]))}
    wrapper = types.SimpleNamespace(cross_attn_cond_ids=list(SAO_ROUTING.cross_attention_ids),
                                    global_cond_ids=list(SAO_ROUTING.global_ids), input_concat_ids=[],
                                    prepend_cond_ids=[])
    expected = wrapper_cls.get_conditioning_inputs(wrapper, tensors)
    got = route(ours, SAO_ROUTING)
    results["sao_cross_tokens"] = float(np.max(np.abs(np.asarray(got.cross) - expected["cross_attn_cond"].numpy())))
    results["sao_global"] = float(np.max(np.abs(np.asarray(got.global_cond) - expected["global_cond"].numpy())))
    results["sao_shapes"] = {"cross": list(got.cross.shape), "global": list(got.global_cond.shape)}
    out = ROOT / "bench" / "results" / "conditioning_parity.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(results, indent=1))
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()

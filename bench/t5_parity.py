"""T5 encoder parity at the t5-base shape (issue 19, acceptance 1), random weights, no download.

    python bench/t5_parity.py                    # 2 x 128 tokens, fp32 + bf16 + fp16
    python bench/t5_parity.py --length 64 --no-half

transformers' `T5EncoderModel(T5Config(d_model=768, d_kv=64, d_ff=3072, num_layers=12, num_heads=12,
vocab_size=32128, feed_forward_proj="relu"))` with its own random init is saved to a temp directory
and loaded with `jaxstage.models.convert_t5.load_t5`; both run on a padded batch (row 0 full, row 1
padded after 37 tokens). Errors are over real tokens only; padded outputs are checked finite. The
half-precision rows compare the JAX encoder at that compute dtype against the PyTorch fp32 output.
Prints the figures and writes `bench/results/t5_parity.json`.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import torch
import transformers

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from jaxstage.models.convert_t5 import load_t5, t5_forward_jit

T5_BASE = dict(vocab_size=32128, d_model=768, d_kv=64, d_ff=3072, num_layers=12, num_heads=12,
               relative_attention_num_buckets=32, relative_attention_max_distance=128,
               feed_forward_proj="relu", decoder_start_token_id=0, pad_token_id=0, eos_token_id=1)


def _batch(length: int, real_in_row_1: int) -> tuple[np.ndarray, np.ndarray]:
    ids = np.random.default_rng(0).integers(2, T5_BASE["vocab_size"], (2, length)).astype(np.int32)
    mask = np.ones((2, length), bool)
    mask[1, real_in_row_1:] = False
    return np.where(mask, ids, 0).astype(np.int32), mask


def _errors(out: np.ndarray, ref: np.ndarray, mask: np.ndarray) -> dict:
    diff = np.abs(out - ref)[mask]
    scale = float(np.abs(ref[mask]).max())
    return {"max_abs_error": float(diff.max()), "mean_abs_error": float(diff.mean()),
            "max_abs_reference": scale, "max_error_relative_to_max_abs": float(diff.max()) / scale,
            "padded_outputs_finite": bool(np.isfinite(out).all())}


def _timed_forward(loaded, ids, mask) -> tuple[np.ndarray, float]:
    out = np.asarray(t5_forward_jit(loaded.graphdef, loaded.params, ids, mask))  # compile + run
    start = time.perf_counter()
    out = np.asarray(t5_forward_jit(loaded.graphdef, loaded.params, ids, mask))
    return out, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--length", type=int, default=128, help="tokens per row (stable-audio-tools: 128)")
    parser.add_argument("--no-half", action="store_true", help="skip the bf16/fp16 rows")
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "t5_parity.json"))
    args = parser.parse_args()
    ids, mask = _batch(args.length, real_in_row_1=min(37, args.length - 1))

    torch.manual_seed(0)
    model = transformers.T5EncoderModel(transformers.T5Config(**T5_BASE)).eval()
    with torch.no_grad():
        ref = model(input_ids=torch.from_numpy(ids).long(),
                    attention_mask=torch.from_numpy(mask).long()).last_hidden_state.numpy()

    result = {"shape": "t5-base (random weights, transformers init)", "config": T5_BASE,
              "batch": list(ids.shape), "real_tokens_per_row": mask.sum(-1).tolist(),
              "device": str(jax.devices()[0]), "cpu": platform.processor() or platform.machine(),
              "jax": jax.__version__, "transformers": transformers.__version__, "torch": torch.__version__}
    with tempfile.TemporaryDirectory() as tmp:
        model.save_pretrained(tmp)
        for dtype in (["float32"] if args.no_half else ["float32", "bfloat16", "float16"]):
            loaded = load_t5(tmp, dtype=jnp.dtype(dtype))
            out, seconds = _timed_forward(loaded, ids, mask)
            result[dtype] = {**_errors(out, ref, mask), "forward_seconds": round(seconds, 4)}
            del loaded
    result["fp32_within_1e-4"] = result["float32"]["max_abs_error"] <= 1e-4

    out_path = Path(args.out)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_text(json.dumps(result, indent=1) + "\n")
    for dtype in ("float32", "bfloat16", "float16"):
        if dtype in result:
            r = result[dtype]
            print(f"{dtype:9s} max abs error {r['max_abs_error']:.3e}  relative to max |ref| "
                  f"{r['max_error_relative_to_max_abs']:.3e}  (max |ref| {r['max_abs_reference']:.3f}, "
                  f"padded finite {r['padded_outputs_finite']}, forward {r['forward_seconds']:.3f} s)")
    print(f"wrote {out_path}")


if __name__ == "__main__":
    main()

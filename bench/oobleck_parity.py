"""Oobleck parity at the exact Stable Audio Open configuration (issue 18, acceptance 1b).

    python bench/oobleck_parity.py                  # SAO VAE, 1.02 s of stereo 44.1 kHz audio (22 latents)
    python bench/oobleck_parity.py --latents 8      # shorter

stable-audio-tools 0.0.19's OobleckEncoder/OobleckDecoder (channels 128, c_mults [1,2,4,8,16],
strides [2,4,4,8,8], stereo, latent 64, SnakeBeta, no final tanh) with PyTorch's default
initialization and random SnakeBeta parameters; the weights go into jaxstage's ``OobleckVAE`` by key
(``load_torch_state``), the outputs are compared (max abs error / max abs output), and exporting the
imported weights is checked bit for bit. Prints one JSON line and appends it to ``--out``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import torch
from flax import nnx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from jaxstage.models.oobleck import OobleckConfig, OobleckVAE, load_torch_state, torch_state  # noqa: E402
from jaxstage.tools.export.sat_reference import load_oobleck_classes  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--latents", type=int, default=22, help="latent frames (2048 samples each)")
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "oobleck_parity.jsonl"))
    parser.add_argument("--memory-seconds", type=float, default=60.0,
                        help="also compile (not run) the SAO decode of this many seconds, chunked and unchunked, "
                             "and report XLA's memory figures (0: skip)")
    args = parser.parse_args()
    cfg = OobleckConfig()  # the SAO shape
    encoder_cls, decoder_cls, _ = load_oobleck_classes()
    torch.manual_seed(0)
    common = dict(channels=cfg.channels, c_mults=list(cfg.c_mults), strides=list(cfg.strides), use_snake=True)
    encoder = encoder_cls(in_channels=2, latent_dim=2 * cfg.latent_dim, **common).eval()
    decoder = decoder_cls(out_channels=2, latent_dim=cfg.latent_dim, final_tanh=False, **common).eval()
    state = {}
    for name, module in (("encoder", encoder), ("decoder", decoder)):
        with torch.no_grad():
            for key, param in module.named_parameters():
                if key.endswith(("alpha", "beta")):
                    param.copy_(0.3 * torch.randn_like(param))
        state.update({f"{name}.{k}": v.numpy().copy() for k, v in module.state_dict().items()})
    vae = OobleckVAE(cfg, nnx.Rngs(0))
    load_torch_state(vae, state)
    exported = torch_state(vae)
    bit_exact = exported.keys() == state.keys() and all(np.array_equal(np.asarray(exported[k]), v)
                                                          for k, v in state.items())

    rng = np.random.default_rng(0)
    audio = (0.5 * rng.standard_normal((1, 2, args.latents * cfg.hop))).astype(np.float32)
    latents = rng.standard_normal((1, cfg.latent_dim, args.latents)).astype(np.float32)
    start = time.perf_counter()
    with torch.no_grad():
        want_enc = encoder(torch.from_numpy(audio)).numpy().transpose(0, 2, 1)
        want_dec = decoder(torch.from_numpy(latents)).numpy().transpose(0, 2, 1)
    torch_s = time.perf_counter() - start
    graph, params = nnx.split(vae)
    encode = jax.jit(lambda p, x: nnx.merge(graph, p).encoder(x))
    decode = jax.jit(lambda p, z: nnx.merge(graph, p).decode(z))
    start = time.perf_counter()
    got_enc = np.asarray(encode(params, jnp.asarray(audio.transpose(0, 2, 1))))
    got_dec = np.asarray(decode(params, jnp.asarray(latents.transpose(0, 2, 1))))
    jax_s = time.perf_counter() - start  # includes compilation

    def relative(got, want):
        return float(np.max(np.abs(got - want)) / np.max(np.abs(want)))

    result = {
        "config": "SAO Oobleck (channels 128, c_mults [1,2,4,8,16], strides [2,4,4,8,8], stereo, latent 64)",
        "parameters": int(sum(v.size for v in state.values())), "audio_samples": int(audio.shape[-1]),
        "seconds": audio.shape[-1] / 44100, "encoder_rel_err": relative(got_enc, want_enc),
        "encoder_output_scale": float(np.max(np.abs(want_enc))), "decoder_rel_err": relative(got_dec, want_dec),
        "decoder_output_scale": float(np.max(np.abs(want_dec))), "import_export_bit_exact": bool(bit_exact),
        "torch_forward_s": round(torch_s, 2), "jax_compile_and_forward_s": round(jax_s, 2),
        "device": jax.devices()[0].device_kind, "jax": jax.__version__, "torch": torch.__version__,
    }
    if args.memory_seconds:
        result.update(decode_memory(vae, cfg, args.memory_seconds))
    print(json.dumps(result))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    with open(args.out, "a") as f:
        f.write(json.dumps(result) + "\n")


def decode_memory(vae: OobleckVAE, cfg: OobleckConfig, seconds: float) -> dict:
    """XLA's temporary-buffer figures (MiB) of decoding ``seconds`` of latents at once and in
    stable-audio-tools' chunks (128 latents, overlap 32): compiled for abstract shapes, never run."""
    from jaxstage.models.oobleck import chunked

    frames = int(round(seconds * 44100 / cfg.hop))
    graph, params = nnx.split(vae)
    latents = jax.ShapeDtypeStruct((1, frames, cfg.latent_dim), jnp.float32)
    out = {"memory_latents": frames}
    for name, fn in (("unchunked", lambda p, z: nnx.merge(graph, p).decode(z)),
                     ("chunked", lambda p, z: chunked(nnx.merge(graph, p).decode, z, frames, 1, cfg.hop))):
        stats = jax.jit(fn).lower(params, latents).compile().memory_analysis()
        out[f"decode_{name}_temp_mib"] = round(stats.temp_size_in_bytes / 2**20, 1)
        out[f"decode_{name}_output_mib"] = round(stats.output_size_in_bytes / 2**20, 1)
    return out


if __name__ == "__main__":
    main()

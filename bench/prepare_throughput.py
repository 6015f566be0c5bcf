"""Throughput of `jaxstage prepare` (clips/s), without encoders and with transformers encoders.

    python bench/prepare_throughput.py                       # 64 clips of 10 s at 16 kHz
    python bench/prepare_throughput.py --clips 32 --variants none base

Generates WAV files (tones + noise, 44.1 kHz stereo so decoding, downmix and resampling all run),
writes a `path,caption` CSV and times `prepare` into a fresh directory per variant:
  none    decode, resample, crop/pad, write shards
  tiny    + a 1-layer T5 encoder and a 2-layer HuBERT (random weights; the pipeline's overhead)
  base    + T5-base-sized text encoder (12 layers, d 768) and HuBERT-base-sized audio encoder
          (12 layers, hidden 768), random weights: the compute of the real models, no download
  oobleck      --autoencoder: the reduced Oobleck of configs/synth_oobleck.py (random weights), 8 kHz
  oobleck_sao  --autoencoder: Stable Audio Open's Oobleck (156M parameters, random weights), 44.1 kHz
The oobleck variants run at their autoencoder's rate and round the clip down to whole latents.
Record the printed figures in docs/benchmarks.md with the machine.

    python bench/prepare_throughput.py --clips 8 --variants oobleck oobleck_sao
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "data"))  # the tiny-model builders the tests use


def write_clips(directory: Path, clips: int, seconds: float, rate: int = 44100) -> Path:
    """`clips` stereo WAVs and a manifest CSV; returns the manifest path."""
    rng = np.random.default_rng(0)
    t = np.arange(int(seconds * rate)) / rate
    lines = ["path,caption"]
    for i in range(clips):
        f0 = rng.uniform(100, 2000)
        mono = 0.3 * np.sin(2 * np.pi * f0 * t) + 0.05 * rng.standard_normal(t.size)
        sf.write(directory / f"clip{i:04d}.wav", np.stack([mono, 0.8 * mono], 1).astype(np.float32), rate)
        lines.append(f"clip{i:04d}.wav,a tone with noise number {i}")
    manifest = directory / "manifest.csv"
    manifest.write_text("\n".join(lines) + "\n")
    return manifest


def save_base_t5(directory: Path) -> Path:
    """T5-base-sized encoder (random weights) with the tiny word-level tokenizer."""
    from hf_tiny import save_tiny_t5
    from transformers import T5Config, T5EncoderModel

    save_tiny_t5(directory)  # tokenizer (and a tiny model, replaced below)
    vocab = json.loads((directory / "tokenizer.json").read_text())["model"]["vocab"]
    config = T5Config(vocab_size=len(vocab), d_model=768, d_kv=64, d_ff=3072, num_layers=12, num_heads=12,
                      decoder_start_token_id=0, pad_token_id=0, eos_token_id=1)
    T5EncoderModel(config).save_pretrained(directory)
    return directory


def save_base_hubert(directory: Path) -> Path:
    """HuBERT-base-sized encoder (random weights, transformers' default config)."""
    from transformers import HubertConfig, HubertModel

    HubertModel(HubertConfig()).save_pretrained(directory)
    return directory


def encoders(variant: str, work: Path):
    from jaxstage.data.encoders import HFAudioEncoder, HFTextEncoder

    if variant == "none":
        return None, None
    if variant == "tiny":
        from hf_tiny import save_tiny_hubert, save_tiny_t5

        return (HFTextEncoder(save_tiny_t5(work / "t5"), max_length=32),
                HFAudioEncoder(save_tiny_hubert(work / "hubert"), layers=(1, 2), sample_rate=16000))
    return (HFTextEncoder(save_base_t5(work / "t5b"), max_length=32),
            HFAudioEncoder(save_base_hubert(work / "hubertb"), layers=(6, 7), sample_rate=16000))


AUTOENCODERS = {  # variant -> (OobleckConfig keyword arguments, sample rate)
    "oobleck": (dict(audio_channels=1, channels=32, c_mults=(1, 2, 4, 8), strides=(2, 4, 4, 4), latent_dim=16), 8000),
    "oobleck_sao": (dict(), 44100),  # OobleckConfig's defaults are SAO's
}


def autoencoder(variant: str, work: Path, seconds: float, batch_size: int):
    """(AutoencoderEncoder, sample rate, clip seconds) of an Oobleck variant (random weights)."""
    from flax import nnx

    from jaxstage.data.latent_encoder import AutoencoderEncoder
    from jaxstage.models.oobleck import OobleckConfig, OobleckVAE
    from jaxstage.tools.export.autoencoder import save_autoencoder

    kwargs, rate = AUTOENCODERS[variant]
    cfg = OobleckConfig(**kwargs)
    directory = save_autoencoder(OobleckVAE(cfg, nnx.Rngs(0)), work / variant, rate)
    num_samples = int(seconds * rate) // cfg.hop * cfg.hop
    encoder = AutoencoderEncoder(directory, rate, num_samples, batch_size=batch_size)
    encoder(np.zeros((1, num_samples), np.float32))  # compile outside the timed run (one executable per batch size)
    return encoder, rate, num_samples / rate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", type=int, default=64)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--sample-rate", type=int, default=16000)
    parser.add_argument("--batch-size", type=int, default=16, help="prepare's (and the autoencoder's) batch")
    parser.add_argument("--variants", nargs="+", default=["none", "tiny", "base"],
                        choices=["none", "tiny", "base", *AUTOENCODERS])
    args = parser.parse_args()
    from jaxstage.data.prepare import prepare

    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        audio_dir = work / "audio"
        audio_dir.mkdir()
        manifest = write_clips(audio_dir, args.clips, args.seconds)
        for variant in args.variants:
            text = ssl = ae = None
            rate, clip_seconds = args.sample_rate, args.seconds
            if variant in AUTOENCODERS:
                ae, rate, clip_seconds = autoencoder(variant, work, args.seconds, args.batch_size)
            else:
                text, ssl = encoders(variant, work)
            start = time.perf_counter()
            meta = prepare(manifest, work / f"out_{variant}", sample_rate=rate, clip_seconds=clip_seconds,
                           text_encoder=text, ssl_encoder=ssl, progress=False, autoencoder=ae,
                           batch_size=args.batch_size)
            seconds = time.perf_counter() - start
            assert meta["count"] == args.clips, meta["skipped"]
            results[variant] = {"seconds": round(seconds, 2), "clips_per_s": round(args.clips / seconds, 2),
                                "sample_rate": rate, "clip_seconds": round(clip_seconds, 3)}
            print(json.dumps({"variant": variant, **results[variant]}), file=sys.stderr, flush=True)  # as it goes
    print(json.dumps({"clips": args.clips, "clip_seconds": args.seconds, "sample_rate": args.sample_rate,
                      "cpu_count": os.cpu_count(), "results": results}))


if __name__ == "__main__":
    main()

"""A tiny autoencoder config (1024-sample clips, a 4-channel VAE of hop 8, a 2-scale discriminator)."""

from pathlib import Path

import pytest

from jaxstage.config import load_config

ROOT = Path(__file__).resolve().parents[2]
CONFIG = str(ROOT / "configs" / "synth_oobleck.py")
TINY = ["data.clip_seconds=0.128", "autoencoder.channels=4", "autoencoder.c_mults=[1, 2]",
        "autoencoder.strides=[2, 4]", "autoencoder.latent_dim=4", "autoencoder.stft_resolutions=[[256, 64], [64, 16]]",
        "train.batch_size=8", "train.log_every=1", "train.ckpt_every=2", "train.ckpt_keep=10",
        "train.progress_bar=false", "train.async_checkpoint=false", "sample.num=2", "sample.every=0",
        "sample.final_eval_prompts=0"]
DISC = ["autoencoder.disc_enabled=true", "autoencoder.disc_filters=4", "autoencoder.disc_n_ffts=[128, 64]",
        "autoencoder.disc_dilations=[1, 2]"]


def tiny_config(*sets: str, disc: bool = True):
    """The tiny autoencoder config with the discriminator (unless ``disc`` is false) and ``sets``."""
    return load_config(CONFIG, TINY + (DISC if disc else []) + list(sets))


@pytest.fixture
def tiny():
    return tiny_config

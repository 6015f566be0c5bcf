"""``autoencoder.*`` validation: read only with task=autoencoder, bad values one line naming the key."""

import pytest

from jaxstage.config import Config, ConfigError, load_config, validate
from tests.autoencoder.conftest import CONFIG, TINY


def test_default_config_is_the_contract_with_the_latent_codec():
    cfg = load_config(CONFIG)
    a = cfg.autoencoder
    assert (cfg.task, cfg.data.sample_rate, cfg.num_samples) == ("autoencoder", 8000, 8192)
    assert (a.strides, a.c_mults, a.latent_dim, a.audio_channels, a.use_snake) == ((2, 4, 4, 4), (1, 2, 4, 8), 16,
                                                                                   1, True)
    assert cfg.num_samples // 128 == 64


def test_autoencoder_keys_need_task_autoencoder():
    cfg = Config()
    cfg.autoencoder.kl_weight = 1e-3
    with pytest.raises(ConfigError, match=r"^autoencoder.kl_weight is set but only task=autoencoder reads "):
        validate(cfg)


@pytest.mark.parametrize("sets, message", [
    (["autoencoder.strides=[2, 4, 4, 3]"], "autoencoder.strides=(2, 4, 4, 3): their product 96 must divide"),
    (["autoencoder.strides=[2, 4]"], "differ in length"),
    (["autoencoder.audio_channels=2"], "autoencoder.audio_channels=2: the data pipeline is mono"),
    (["autoencoder.latent_dim=0"], "autoencoder.latent_dim=0 must be >= 1"),
    (["autoencoder.stft_resolutions=[[32, 64]]"], "autoencoder.stft_resolutions: (32, 64) needs"),
    (["autoencoder.stft_resolutions=[[32768, 64]]"], "autoencoder.stft_resolutions: (32768, 64) needs"),
    (["autoencoder.kl_weight=-1"], "autoencoder.kl_weight=-1.0 must be >= 0"),
    (["autoencoder.stft_weight=0"], "both 0: nothing to reconstruct with"),
    (["autoencoder.disc_lr=1e-3"], "autoencoder.disc_lr is set but autoencoder.disc_enabled=false"),
    (["autoencoder.disc_enabled=true", "autoencoder.disc_n_ffts=[16384]"], "autoencoder.disc_n_ffts: 16384 must be"),
    (["autoencoder.disc_enabled=true", "autoencoder.disc_start_step=100000"], "the discriminator would never train"),
    (["autoencoder.train_crop=2050"], "autoencoder.train_crop=2050 must be 0 (whole clips) or a multiple of the hop 128"),
    (["autoencoder.train_crop=16384"], "autoencoder.train_crop=16384 must be 0 (whole clips) or a multiple"),
    (["autoencoder.train_crop=-128"], "autoencoder.train_crop=-128 must be 0 (whole clips) or a multiple"),
    (["autoencoder.train_crop=512"], "autoencoder.train_crop=512: the largest autoencoder.stft_resolutions fft size "
                                     "1024 must be below twice the crop (1024"),
    (["autoencoder.train_crop=512", "autoencoder.stft_resolutions=[[512, 128]]", "autoencoder.disc_enabled=true",
      "autoencoder.disc_n_ffts=[1024]"], "autoencoder.train_crop=512: autoencoder.disc_n_ffts 1024 must be <= the crop"),
    (["model.depth=2"], "model.depth is set but task=autoencoder does not read it"),
    (["sample.steps=8"], "sample.steps is set but task=autoencoder does not read it"),
    (["data.source=prepared", "data.path=/nowhere"], "task=autoencoder trains on data.source=synthetic"),
])
def test_bad_values_are_one_line_errors(sets, message):
    with pytest.raises(ConfigError) as info:
        load_config(CONFIG, sets)
    assert message in str(info.value) and "\n" not in str(info.value)


def test_the_tiny_config_is_valid():
    assert load_config(CONFIG, TINY).autoencoder.strides == (2, 4)


def test_train_crop_accepts_multiples_of_the_hop():
    assert load_config(CONFIG, ["autoencoder.train_crop=2048"]).autoencoder.train_crop == 2048
    assert load_config(CONFIG, ["autoencoder.train_crop=8192"]).autoencoder.train_crop == 8192  # the whole clip

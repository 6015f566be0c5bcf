"""wav2vec2 / HuBERT / WavLM port: every hidden state matches transformers on tiny random models."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
from flax import nnx  # noqa: E402

from jaxstage.models.convert_wav2vec2 import (  # noqa: E402
    config_from_transformers,
    fold_weight_norm,
    from_torch_model,
    load_encoder,
)

TINY = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=37,
            conv_dim=(16, 16, 16), conv_kernel=(10, 3, 3), conv_stride=(5, 2, 2),
            num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=4)
WAVLM = dict(num_buckets=16, max_bucket_distance=40)
TOL = 1e-4

VARIANTS = {
    "wav2vec2_group_postln": ("Wav2Vec2", dict(feat_extract_norm="group", do_stable_layer_norm=False)),
    "wav2vec2_layer_preln": ("Wav2Vec2", dict(feat_extract_norm="layer", do_stable_layer_norm=True,
                                               conv_bias=True)),
    "hubert": ("Hubert", dict()),
    "hubert_bn_noprojln": ("Hubert", dict(conv_pos_batch_norm=True, feat_proj_layer_norm=False)),
    "wavlm_postln": ("WavLM", dict(WAVLM)),
    "wavlm_layer_preln": ("WavLM", dict(WAVLM, feat_extract_norm="layer", do_stable_layer_norm=True)),
}


def _tiny_model(name: str):
    """A tiny transformers model in eval mode with every parameter/buffer randomly perturbed
    (its init zeroes biases and sets norms to 1, which would hide conversion mistakes)."""
    prefix, kw = VARIANTS[name]
    config = getattr(transformers, f"{prefix}Config")(**TINY, **kw)
    torch.manual_seed(0)
    model = getattr(transformers, f"{prefix}Model")(config).eval()
    with torch.no_grad():
        for key, t in model.state_dict().items():
            if t.is_floating_point():
                t.add_(0.1 * torch.randn_like(t))
                if "running_var" in key:
                    t.abs_()
                if "rel_attn_embed" in key:  # make the WavLM position bias matter
                    t.mul_(20.0)
    return model


@jax.jit
def _encode(graphdef, state, wav, attention_mask):
    return nnx.merge(graphdef, state)(wav, attention_mask)


def encode(model, wav, attention_mask=None):
    """Jitted forward of `model` on [B, L]: split, so one compilation serves every set of weights."""
    return _encode(*nnx.split(model), wav, attention_mask)


def _waveform(seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((2, 1600)).astype(np.float32)


def _max_errors(jax_states, torch_states) -> list[float]:
    return [float(np.abs(np.asarray(a) - b.numpy()).max()) for a, b in zip(jax_states, torch_states)]


@pytest.mark.parametrize("name", list(VARIANTS))
def test_hidden_states_match_transformers(name):
    hf = _tiny_model(name)
    wav = _waveform()
    with torch.no_grad():
        ref = hf(torch.from_numpy(wav), output_hidden_states=True)
    model = from_torch_model(hf)
    assert model.cfg.model_type == hf.config.model_type
    out = encode(model, jnp.asarray(wav))

    assert len(out.hidden_states) == len(ref.hidden_states) == TINY["num_hidden_layers"] + 1
    errors = _max_errors(out.hidden_states, ref.hidden_states)
    assert max(errors) <= TOL, errors
    last = float(np.abs(np.asarray(out.last_hidden_state) - ref.last_hidden_state.numpy()).max())
    assert last <= TOL
    if hasattr(ref, "extract_features") and ref.extract_features is not None:
        assert _max_errors([out.extract_features], [ref.extract_features])[0] <= TOL


@pytest.mark.filterwarnings("ignore:Support for mismatched key_padding_mask")  # torch, inside WavLM
@pytest.mark.parametrize("name", ["wav2vec2_layer_preln", "wavlm_postln"])
def test_attention_mask_matches_transformers(name):
    hf = _tiny_model(name)
    wav = _waveform(1)
    mask = np.ones(wav.shape, np.int64)
    mask[1, 1100:] = 0
    wav[1, 1100:] = 0.0
    with torch.no_grad():
        ref = hf(torch.from_numpy(wav), attention_mask=torch.from_numpy(mask), output_hidden_states=True)
    out = encode(from_torch_model(hf), jnp.asarray(wav), jnp.asarray(mask))
    errors = _max_errors(out.hidden_states, ref.hidden_states)
    assert max(errors) <= TOL, errors


def test_weight_norm_fold_matches_torch():
    weight_norm = torch.nn.utils.parametrizations.weight_norm
    conv = weight_norm(torch.nn.Conv1d(8, 8, 5, groups=2), name="weight", dim=2)
    param = conv.parametrizations.weight
    with torch.no_grad():
        param.original0.add_(torch.randn_like(param.original0))
        g, v = param.original0.numpy(), param.original1.numpy()
        np.testing.assert_allclose(fold_weight_norm(g, v, dim=2), conv.weight.numpy(), atol=1e-6)


def test_save_pretrained_load_encoder_roundtrip(tmp_path):
    hf = _tiny_model("wavlm_postln")
    hf.save_pretrained(tmp_path)
    model = load_encoder(tmp_path)
    assert model.cfg == config_from_transformers(hf.config)
    wav = _waveform(2)
    with torch.no_grad():
        ref = hf(torch.from_numpy(wav), output_hidden_states=True)
    out = encode(model, jnp.asarray(wav))
    assert max(_max_errors(out.hidden_states, ref.hidden_states)) <= TOL

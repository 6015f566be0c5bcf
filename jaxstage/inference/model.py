"""What sampling needs of a run, and nothing more: the codec, the objective, the denoiser's graph
and parameter shardings (no optimizer, no SSL encoder, no regime). Training's ``Experiment``
extends it with the optimizer and the recipe."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import jax
from flax import nnx
from jax.sharding import Mesh, NamedSharding

from jaxstage import parallel
from jaxstage.config import Config
from jaxstage.data.pipeline import ExampleSpec, example_spec
from jaxstage.diffusion.objectives import make_objective
from jaxstage.models.codecs import make_codec
from jaxstage.models.denoiser import Denoiser

Params = dict[str, Any]


@dataclass
class InferenceModel:
    """Static pieces of a run's denoiser, built once from the config."""

    cfg: Config
    mesh: Mesh
    rules: dict[str, tuple[str, ...]]
    codec: Any
    objective: Any
    graphdef: nnx.GraphDef
    buffers: Params  # non-trainable model variables (constants captured by jit)
    abstract_params: Params
    param_shardings: Params
    batch_sharding: NamedSharding
    example_spec: ExampleSpec  # batch key -> (per-example shape, dtype); prepared data: from dataset.json

    @property
    def io_channels(self) -> int:
        return self.codec.channels

    @property
    def text_key(self) -> str:
        """The batch key holding the text condition: ``text_emb`` (precomputed) or ``text_ids``."""
        return "text_emb" if "text_emb" in self.example_spec else "text_ids"

    @property
    def text_dim(self) -> int:
        """Width of precomputed text embeddings (0 with the learned encoder)."""
        return self.example_spec["text_emb"][0][-1] if "text_emb" in self.example_spec else 0

    def model(self, params: Params) -> Denoiser:
        """A Denoiser module bound to ``params`` (use inside jit)."""
        return nnx.merge(self.graphdef, params, self.buffers)


def codec_from_config(cfg: Config):
    """The codec named by ``codec.kind`` with the config's hyperparameters."""
    c = cfg.codec
    if c.kind == "stft":
        return make_codec("stft", sample_rate=cfg.data.sample_rate, n_fft=c.n_fft, hop_length=c.hop_length,
                          compress=c.compress, scale=c.scale)
    return make_codec("mel", sample_rate=cfg.data.sample_rate, n_fft=c.n_fft, hop_length=c.hop_length,
                      n_mels=c.n_mels, f_min=c.f_min, f_max=c.f_max or cfg.data.sample_rate / 2,
                      griffin_lim_iters=c.griffin_lim_iters)


def objective_from_config(cfg: Config):
    """The diffusion objective named by ``diffusion.objective``."""
    if cfg.diffusion.objective == "edm":
        return make_objective("edm", sigma_data=cfg.diffusion.sigma_data)
    return make_objective(cfg.diffusion.objective)


def inference_parts(cfg: Config, mesh: Mesh | None = None, *, projector_dim: int = 0,
                    spec: ExampleSpec | None = None) -> dict[str, Any]:
    """The fields of an ``InferenceModel`` for ``cfg`` on ``mesh`` (default the config's); the denoiser
    carries the REPA projector when ``projector_dim`` > 0 (its weights are part of the run's params)."""
    mesh = parallel.make_mesh(cfg.mesh) if mesh is None else mesh
    rules = parallel.rules_dict(cfg.mesh.rules)
    codec = codec_from_config(cfg)
    spec = example_spec(cfg) if spec is None else spec
    text_dim = spec["text_emb"][0][-1] if "text_emb" in spec else 0

    def denoiser(key: int = 0) -> Denoiser:
        return Denoiser(cfg, codec.channels, ssl_dim=projector_dim, text_dim=text_dim, rngs=nnx.Rngs(key))

    graphdef, abstract_param_state, _ = nnx.split(nnx.eval_shape(denoiser), nnx.Param, ...)
    # Buffers (non-Param variables, e.g. fixed frequencies) are deterministic constants; under jit
    # XLA computes only them (the parameter initializers are dead code).
    buffers = jax.jit(lambda: nnx.to_pure_dict(nnx.split(denoiser(), nnx.Param, ...)[2]))()
    return dict(cfg=cfg, mesh=mesh, rules=rules, codec=codec, objective=objective_from_config(cfg),
                graphdef=graphdef, buffers=buffers, abstract_params=nnx.to_pure_dict(abstract_param_state),
                param_shardings=parallel.state_shardings(mesh, abstract_param_state, rules),
                batch_sharding=parallel.batch_sharding(mesh, rules), example_spec=spec)

"""stable-audio-tools' own PyTorch `DiffusionTransformer`, loaded without its heavy dependencies.

The PyPI package (0.0.19) imports gradio, k-diffusion, laion-clap, ... from its two `__init__`
modules. The DiT itself needs only torch, einops and safetensors, so `load_dit_class` registers the
two packages as bare namespaces (their `__init__` never runs) and imports
`stable_audio_tools.models.dit` directly. Install: `pip install --no-deps stable-audio-tools==0.0.19
einops` next to torch. Used by the parity tests, `bench/step.py` and the docs' loading recipe.
"""

from __future__ import annotations

import importlib.util
import sys
import types
from pathlib import Path
from typing import Any


INSTALL_HINT = ("stable-audio-tools is not installed: pip install --no-deps stable-audio-tools==0.0.19 einops "
                "(and torch: pip install -e '.[torch]')")


def _import_torch():
    try:
        import torch
    except ImportError as err:
        raise ImportError(f"{INSTALL_HINT} ({err})") from None
    return torch


def load_dit_class():
    """`stable_audio_tools.models.dit.DiffusionTransformer`, imported without the package `__init__`s."""
    _import_torch()
    if "stable_audio_tools" not in sys.modules:
        spec = importlib.util.find_spec("stable_audio_tools")
        if spec is None:
            raise ImportError(INSTALL_HINT)
        root = Path(next(iter(spec.submodule_search_locations)))
        for name, path in (("stable_audio_tools", root), ("stable_audio_tools.models", root / "models")):
            package = types.ModuleType(name)  # a bare namespace: the heavy __init__ never runs
            package.__path__ = [str(path)]
            sys.modules[name] = package
    try:
        from stable_audio_tools.models.dit import DiffusionTransformer
    except ImportError as err:
        raise ImportError(f"stable-audio-tools' DiT failed to import ({err}); {INSTALL_HINT}") from err
    return DiffusionTransformer


def build_wrapped_dit(model_config: dict[str, Any]):
    """A torch module whose state dict has the conditioned wrapper's `model.model.*` keys.

    ``model_config``: a stable-audio-tools `model_config.json` (model_type diffusion_cond, DiT). The
    outer two levels stand in for `ConditionedDiffusionModelWrapper` (conditioner and pretransform
    absent) and `DiTWrapper`, which hold nothing but `.model`.
    """
    torch = _import_torch()
    dit_cls = load_dit_class()
    diffusion = model_config["model"]["diffusion"]
    dit = dit_cls(diffusion_objective=diffusion.get("diffusion_objective", "v"), **diffusion["config"])
    inner = torch.nn.Module()
    inner.model = dit
    outer = torch.nn.Module()
    outer.model = inner
    return outer


def _import_with_stubs(names: tuple[str, ...], load):
    """Run ``load()`` with the modules ``names`` stubbed (each imported name an unused placeholder)
    if they are not already imported; the stubs are removed again afterwards."""
    stubs = {name: types.ModuleType(name) for name in names}
    for module in stubs.values():
        module.__getattr__ = lambda attr: type(attr, (), {})
    saved = {name: sys.modules.get(name) for name in stubs}
    sys.modules.update({name: module for name, module in stubs.items() if saved[name] is None})
    try:
        return load()
    finally:
        for name, module in saved.items():
            if module is None:
                sys.modules.pop(name, None)


def load_conditioning_classes():
    """stable-audio-tools' ``(NumberConditioner, ConditionedDiffusionModelWrapper)``.

    ``models/conditioners.py`` and ``models/diffusion.py`` import torchaudio, einops_exts, the
    inference (sampling) modules and the pretransform factory, none of which the number conditioner
    or the wrapper's ``get_conditioning_inputs`` use; they are stubbed while the two modules import.
    """
    load_dit_class()  # the bare package namespaces

    def load():
        from stable_audio_tools.models.conditioners import NumberConditioner
        from stable_audio_tools.models.diffusion import ConditionedDiffusionModelWrapper
        return NumberConditioner, ConditionedDiffusionModelWrapper

    try:
        return _import_with_stubs((
            "torchaudio", "torchaudio.transforms", "einops_exts", "stable_audio_tools.inference",
            "stable_audio_tools.inference.utils", "stable_audio_tools.inference.generation",
            "stable_audio_tools.inference.sampling", "stable_audio_tools.models.factory",
            "stable_audio_tools.models.pretransforms"), load)
    except ImportError as err:
        raise ImportError(f"stable-audio-tools' conditioners failed to import ({err}); {INSTALL_HINT}") from err


def load_oobleck_classes():
    """stable-audio-tools' ``(OobleckEncoder, OobleckDecoder, VAEBottleneck)``.

    ``models/autoencoders.py`` imports torchaudio, alias_free_torch and the diffusion, sampling and
    transformer modules at its top, none of which Oobleck uses; they are stubbed only while it imports
    (then removed again, so the real modules still import later in the same process).
    """
    load_dit_class()  # the bare package namespaces

    def load():
        from stable_audio_tools.models.autoencoders import OobleckDecoder, OobleckEncoder
        from stable_audio_tools.models.bottleneck import VAEBottleneck
        return OobleckEncoder, OobleckDecoder, VAEBottleneck

    try:
        return _import_with_stubs((
            "torchaudio", "torchaudio.transforms", "alias_free_torch", "stable_audio_tools.inference",
            "stable_audio_tools.inference.sampling", "stable_audio_tools.inference.utils",
            "stable_audio_tools.models.diffusion", "stable_audio_tools.models.factory",
            "stable_audio_tools.models.pretransforms", "stable_audio_tools.models.transformer"), load)
    except ImportError as err:
        raise ImportError(f"stable-audio-tools' Oobleck failed to import ({err}); {INSTALL_HINT}") from err

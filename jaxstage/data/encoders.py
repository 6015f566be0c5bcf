"""Frozen Hugging Face encoders that `prepare` runs once per item (text embeddings, SSL targets).

The interface `prepare` relies on is small (see `TextEncoder` / `AudioEncoder`): a call on a batch
returning numpy arrays of a fixed shape, and `describe()` -> a JSON-able dict for `dataset.json`.
torch and transformers are imported lazily; models load with `local_files_only=True` (no network),
run in eval mode under `torch.no_grad()` on CPU in float32.
"""

from __future__ import annotations

import json

from pathlib import Path
from typing import Any, Protocol, Sequence

import numpy as np

from jaxstage.data.audio_io import resample

INSTALL_HINT = 'needs torch and transformers: pip install -e ".[torch]"'
DEFAULT_SSL_RATE = 16000


class TextEncoder(Protocol):
    def __call__(self, captions: list[str]) -> tuple[np.ndarray, np.ndarray]: ...  # [B, L, D], [B, L]
    def describe(self) -> dict[str, Any]: ...


class AudioEncoder(Protocol):
    def __call__(self, audio: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray: ...  # [B, T, D]
    def describe(self) -> dict[str, Any]: ...


def _import_torch(owner: str):
    try:
        import torch
        import transformers
    except ImportError as err:
        raise ImportError(f"{owner} {INSTALL_HINT} ({err})") from None
    return torch, transformers


def _model_dir(model_dir: str | Path, owner: str) -> Path:
    path = Path(model_dir)
    if not (path / "config.json").is_file():
        raise FileNotFoundError(f"{path}: no config.json ({owner} needs a local model folder)")
    return path


class HFTextEncoder:
    """Captions -> (hidden states float32 [B, max_length, D] zeroed on padding, mask bool [B, max_length]).

    T5 family: the encoder stack only; CLAP: the text tower's last hidden state; otherwise `AutoModel`
    (its encoder if it is an encoder-decoder).
    """

    def __init__(self, model_dir: str | Path, max_length: int = 64):
        torch, transformers = _import_torch("HFTextEncoder")
        self.model_dir = _model_dir(model_dir, "HFTextEncoder")
        self.max_length = int(max_length)
        config = transformers.AutoConfig.from_pretrained(self.model_dir, local_files_only=True)
        self.model_type = config.model_type
        text_towers = {"t5": "T5EncoderModel", "mt5": "T5EncoderModel", "umt5": "UMT5EncoderModel",
                       "clap": "ClapTextModelWithProjection"}
        if self.model_type in text_towers:
            model_class = getattr(transformers, text_towers[self.model_type])
            model = model_class.from_pretrained(self.model_dir, local_files_only=True)
        else:
            model = transformers.AutoModel.from_pretrained(self.model_dir, local_files_only=True)
            if getattr(model.config, "is_encoder_decoder", False) and hasattr(model, "get_encoder"):
                model = model.get_encoder()
        self.model = model.float().eval()
        self.tokenizer = transformers.AutoTokenizer.from_pretrained(self.model_dir, local_files_only=True)
        self._torch = torch
        self.dim = int(self(["probe"])[0].shape[-1])

    def __call__(self, captions: list[str]) -> tuple[np.ndarray, np.ndarray]:
        tokens = self.tokenizer(list(captions), padding="max_length", truncation=True,
                                max_length=self.max_length, return_tensors="pt")
        with self._torch.no_grad():
            out = self.model(input_ids=tokens["input_ids"], attention_mask=tokens["attention_mask"])
        mask = tokens["attention_mask"].numpy().astype(bool)
        emb = out.last_hidden_state.float().numpy() * mask[..., None]
        return emb.astype(np.float32), mask

    def describe(self) -> dict[str, Any]:
        return {"model_dir": str(self.model_dir), "model_type": self.model_type,
                "max_length": self.max_length, "dim": self.dim}


def text_encoder_for(model_dir: str | Path, max_length: int = 64) -> TextEncoder:
    """The text encoder `prepare` runs for a local model folder: a T5 (config.json model_type "t5") in
    JAX, jitted in batches on the default device (`models.convert_t5.T5TextEncoder`, fp32); any other
    model (CLAP, ...) through PyTorch (`HFTextEncoder`)."""
    path = _model_dir(model_dir, "the text encoder")
    model_type = json.loads((path / "config.json").read_text()).get("model_type")
    if model_type == "t5":
        from jaxstage.models.convert_t5 import T5TextEncoder

        return T5TextEncoder(path, max_length=max_length)
    return HFTextEncoder(path, max_length=max_length)


class HFAudioEncoder:
    """Audio [B, N] at `sample_rate` -> SSL features float32 [B, frames, dim]: chosen layers averaged.

    `layers` index `hidden_states` (0 = the input embedding, k = after transformer layer k). Audio is
    resampled to the encoder's rate (its feature extractor's `sampling_rate`, else 16 kHz) and, when
    the feature extractor normalizes, standardized per clip over its real (masked) samples.
    """

    def __init__(self, model_dir: str | Path, layers: Sequence[int] = (6, 7), sample_rate: int = 16000):
        torch, transformers = _import_torch("HFAudioEncoder")
        self.model_dir = _model_dir(model_dir, "HFAudioEncoder")
        self.sample_rate = int(sample_rate)
        self.layers = tuple(int(k) for k in layers)
        if not self.layers:
            raise ValueError("HFAudioEncoder: layers is empty")
        model = transformers.AutoModel.from_pretrained(self.model_dir, local_files_only=True)
        num_layers = int(getattr(model.config, "num_hidden_layers", 0))
        bad = [k for k in self.layers if not 0 <= k <= num_layers]
        if bad:
            raise ValueError(f"{self.model_dir}: ssl layer {bad[0]} out of range (model has hidden states "
                             f"0..{num_layers})")
        self.model = model.float().eval()
        self.model_type = model.config.model_type
        self.encoder_rate, self.normalize = DEFAULT_SSL_RATE, False
        if (self.model_dir / "preprocessor_config.json").is_file():
            extractor = transformers.AutoFeatureExtractor.from_pretrained(self.model_dir, local_files_only=True)
            self.encoder_rate = int(getattr(extractor, "sampling_rate", DEFAULT_SSL_RATE))
            self.normalize = bool(getattr(extractor, "do_normalize", False))
        self._torch = torch
        self.dim = int(model.config.hidden_size)

    def __call__(self, audio: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
        audio = np.asarray(audio, np.float32)
        if mask is None:
            mask = np.ones(audio.shape, bool)
        if self.normalize:
            audio = standardize(audio, mask)
        audio = resample(audio, self.sample_rate, self.encoder_rate)
        with self._torch.no_grad():
            out = self.model(input_values=self._torch.from_numpy(np.ascontiguousarray(audio)),
                             output_hidden_states=True)
        hidden = self._torch.stack([out.hidden_states[k] for k in self.layers]).mean(0)
        return hidden.float().numpy().astype(np.float32)

    def describe(self) -> dict[str, Any]:
        return {"model_dir": str(self.model_dir), "model_type": self.model_type, "layers": list(self.layers),
                "dim": self.dim, "encoder_sample_rate": self.encoder_rate, "normalize": self.normalize}


def standardize(audio: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Zero mean, unit variance per row over masked samples (as wav2vec2's extractor); padding stays 0."""
    m = mask.astype(np.float32)
    count = np.maximum(m.sum(-1, keepdims=True), 1.0)
    mean = (audio * m).sum(-1, keepdims=True) / count
    var = (((audio - mean) * m) ** 2).sum(-1, keepdims=True) / count
    return ((audio - mean) / np.sqrt(var + 1e-7) * m).astype(np.float32)

"""Pretrained Hugging Face audio models for evaluation, loaded from local folders (no network).

`ASTClassifier` (an Audio Spectrogram Transformer fine-tuned for tagging, e.g. on AudioSet):
audio [B, N] -> {"logits" [B, C], "probs" (softmax of logits) [B, C], "embedding" [B, D]}, all float64;
the embedding is AST's pooled output ((CLS + distillation token) / 2 after the final layer norm).

`CLAPModel` (a contrastive text-audio model): audio [B, N] -> audio embeddings [B, D], and captions ->
text embeddings [B, D], float64 rows of unit L2 norm, so their dot product is the CLAP cosine score.

Audio at another rate is resampled to the model's (`sample_rate`, from its feature extractor). torch
and transformers are imported lazily; models run in eval mode under `torch.no_grad()` in float32.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from scipy.special import softmax

from jaxstage.data.audio_io import resample
from jaxstage.data.encoders import _import_torch


def _folder_config(model_dir: str | Path, what: str, model_type: str, transformers):
    """(the model folder, its config), checked to exist and to be of `model_type`."""
    path = Path(model_dir)
    if not path.is_dir():
        raise FileNotFoundError(f"{path}: cannot load {what} (no such directory)")
    config = _load(path, what, transformers.AutoConfig.from_pretrained)
    if config.model_type != model_type:
        raise ValueError(f"{path}: cannot load {what} (model_type is {config.model_type!r}, not {model_type!r})")
    return path, config


def _load(path: Path, what: str, loader, **kwargs):
    """`loader(path, local_files_only=True)`, with transformers' (multi-line) errors cut to one line."""
    try:
        return loader(path, local_files_only=True, **kwargs)
    except (OSError, ValueError) as err:
        lines = [line.strip() for line in str(err).splitlines() if line.strip()]
        reason = lines[0] if lines else type(err).__name__
        kind = FileNotFoundError if isinstance(err, OSError) else ValueError
        raise kind(f"{path}: cannot load {what} ({reason})") from None


def _batches(audio: np.ndarray, rate: int, target: int, batch_size: int):
    """Float32 [B, N] audio resampled to `target`, yielded in row blocks of `batch_size`."""
    audio = np.asarray(audio, np.float32)
    if audio.ndim != 2 or audio.shape[0] == 0:
        raise ValueError(f"expected audio of shape [batch >= 1, samples], got {audio.shape}")
    audio = resample(audio, int(rate), int(target))
    for start in range(0, audio.shape[0], batch_size):
        yield audio[start:start + batch_size]


class ASTClassifier:
    """An AST audio classifier: `__call__(audio [B, N], sample_rate)` -> logits, probs, embedding."""

    def __init__(self, model_dir: str | Path, device: str = "cpu", batch_size: int = 16):
        self._torch, transformers = _import_torch("ASTClassifier")
        what = "an AST classifier"
        self.model_dir, config = _folder_config(model_dir, what, "audio-spectrogram-transformer", transformers)
        self.extractor = _load(self.model_dir, what, transformers.ASTFeatureExtractor.from_pretrained)
        model = _load(self.model_dir, what, transformers.ASTForAudioClassification.from_pretrained, config=config)
        self.model = model.float().to(device).eval()
        self.device, self.batch_size = device, int(batch_size)
        self.sample_rate = int(self.extractor.sampling_rate)
        self.num_classes = int(model.config.num_labels)
        self.labels = [model.config.id2label[i] for i in range(self.num_classes)]

    def __call__(self, audio: np.ndarray, sample_rate: int) -> dict[str, np.ndarray]:
        """Audio [B, N] at `sample_rate` -> {"logits", "probs": [B, C], "embedding": [B, D]} float64."""
        logits, embedding = [], []
        for chunk in _batches(audio, sample_rate, self.sample_rate, self.batch_size):
            inputs = self.extractor(list(chunk), sampling_rate=self.sample_rate, return_tensors="pt")
            with self._torch.no_grad():
                pooled = self.model.audio_spectrogram_transformer(
                    inputs["input_values"].to(self.device)).pooler_output
                logits.append(self.model.classifier(pooled).double().cpu().numpy())
            embedding.append(pooled.double().cpu().numpy())
        logits_np = np.concatenate(logits)
        return {"logits": logits_np, "probs": softmax(logits_np, axis=-1), "embedding": np.concatenate(embedding)}


class CLAPModel:
    """A CLAP model: `audio_embeddings(audio, sample_rate)` and `text_embeddings(texts)`, unit rows [B, D].

    Audio longer than the feature extractor's window (10 s for LAION CLAP) is cropped at a random
    offset by transformers; the crop is drawn from a fixed seed so that the same call gives the same
    embedding (numpy's global random state is restored afterwards).
    """

    def __init__(self, model_dir: str | Path, device: str = "cpu", batch_size: int = 16):
        self._torch, transformers = _import_torch("CLAPModel")
        what = "a CLAP model"
        self.model_dir, config = _folder_config(model_dir, what, "clap", transformers)
        self.extractor = _load(self.model_dir, what, transformers.ClapFeatureExtractor.from_pretrained)
        self.tokenizer = _load(self.model_dir, what, transformers.AutoTokenizer.from_pretrained)
        if len(self.tokenizer) <= len(set(self.tokenizer.all_special_tokens)):  # 5.x: no files -> empty vocab
            raise FileNotFoundError(f"{self.model_dir}: cannot load {what} (no tokenizer files)")
        model = _load(self.model_dir, what, transformers.ClapModel.from_pretrained, config=config)
        self.model = model.float().to(device).eval()
        self.device, self.batch_size = device, int(batch_size)
        self.sample_rate = int(self.extractor.sampling_rate)
        text = model.config.text_config  # Roberta positions start after pad_token_id
        self.max_length = min(int(self.tokenizer.model_max_length),
                              int(text.max_position_embeddings) - int(text.pad_token_id or 0) - 1)

    def audio_embeddings(self, audio: np.ndarray, sample_rate: int) -> np.ndarray:
        """Audio [B, N] at `sample_rate` -> float64 [B, D], unit L2 norm per row."""
        out = []
        for chunk in _batches(audio, sample_rate, self.sample_rate, self.batch_size):
            state = np.random.get_state()
            np.random.seed(0)
            try:
                inputs = self.extractor(list(chunk), sampling_rate=self.sample_rate, return_tensors="pt")
            finally:
                np.random.set_state(state)
            with self._torch.no_grad():
                features = self.model.get_audio_features(input_features=inputs["input_features"].to(self.device),
                                                         is_longer=inputs["is_longer"].to(self.device))
            out.append(_features(features))
        return _unit_rows(np.concatenate(out))

    def text_embeddings(self, texts: list[str]) -> np.ndarray:
        """Captions -> float64 [B, D], unit L2 norm per row."""
        texts = [texts] if isinstance(texts, str) else list(texts)
        if not texts:
            raise ValueError("text_embeddings: no texts")
        out = []
        for start in range(0, len(texts), self.batch_size):
            tokens = self.tokenizer(texts[start:start + self.batch_size], padding=True, truncation=True,
                                    max_length=self.max_length, return_tensors="pt")
            with self._torch.no_grad():
                features = self.model.get_text_features(input_ids=tokens["input_ids"].to(self.device),
                                                        attention_mask=tokens["attention_mask"].to(self.device))
            out.append(_features(features))
        return _unit_rows(np.concatenate(out))


def _features(output) -> np.ndarray:
    """get_*_features output -> float64 [B, D]: a tensor (transformers 4.x) or a model output whose
    `pooler_output` holds the projected features (5.x)."""
    tensor = output if hasattr(output, "detach") else output.pooler_output
    return tensor.detach().double().cpu().numpy()


def _unit_rows(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)

"""Text conditioning: a vocabulary-free hash tokenizer, a small learned encoder, and a pass-through
for precomputed transformer embeddings (T5/CLAP computed at data preparation time).

Both conditioners map `(x, mask) -> (tokens [B, L, width] float32, mask [B, L] bool)`, so the DiT's
cross-attention does not care which one is used.
"""

from __future__ import annotations

import re
import zlib

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

PAD_ID = 0
BOS_ID = 1
NUM_SPECIAL_IDS = 2
_WORD = re.compile(r"[^\W_]+")  # runs of (unicode) letters and digits


class HashTokenizer:
    """Word-level tokenizer with no vocabulary file: id = 2 + crc32(word) % (vocab_size - 2).

    0 is padding, 1 is BOS/CLS (always prepended). Deterministic across processes (crc32, not
    Python's salted `hash`).
    """

    def __init__(self, vocab_size: int):
        if vocab_size <= NUM_SPECIAL_IDS:
            raise ValueError(f"vocab_size must be > {NUM_SPECIAL_IDS}, got {vocab_size}")
        self.vocab_size = vocab_size

    def words(self, text: str) -> list[str]:
        return _WORD.findall(text.lower())

    def token_id(self, word: str) -> int:
        return NUM_SPECIAL_IDS + zlib.crc32(word.encode("utf-8")) % (self.vocab_size - NUM_SPECIAL_IDS)

    def __call__(self, texts: list[str], max_length: int) -> tuple[np.ndarray, np.ndarray]:
        """-> ids int32 [B, max_length], mask bool [B, max_length] (True at real tokens)."""
        if max_length < 1:
            raise ValueError(f"max_length must be >= 1, got {max_length}")
        ids = np.full((len(texts), max_length), PAD_ID, np.int32)
        for row, text in enumerate(texts):
            seq = [BOS_ID] + [self.token_id(w) for w in self.words(text)]
            seq = seq[:max_length]
            ids[row, : len(seq)] = seq
        return ids, ids != PAD_ID


class EncoderLayer(nnx.Module):
    """Pre-LN transformer encoder layer: x + MHA(LN(x)), then x + MLP(LN(x)) with exact GELU."""

    def __init__(self, width: int, num_heads: int, *, mlp_ratio: int = 4, norm_eps: float = 1e-6, rngs: nnx.Rngs):
        self.norm1 = nnx.LayerNorm(width, epsilon=norm_eps, rngs=rngs)
        self.attn = nnx.MultiHeadAttention(num_heads, width, decode=False, rngs=rngs)
        self.norm2 = nnx.LayerNorm(width, epsilon=norm_eps, rngs=rngs)
        self.fc1 = nnx.Linear(width, mlp_ratio * width, rngs=rngs)
        self.fc2 = nnx.Linear(mlp_ratio * width, width, rngs=rngs)

    def __call__(self, x: jax.Array, attn_mask: jax.Array) -> jax.Array:
        x = x + self.attn(self.norm1(x), mask=attn_mask)
        return x + self.fc2(jax.nn.gelu(self.fc1(self.norm2(x)), approximate=False))


class TextEncoder(nnx.Module):
    """Token embedding + learned positions + `depth` pre-LN encoder layers + final LayerNorm.

    Padding positions are masked as attention keys (they never influence real tokens) and are
    zeroed in the output.
    """

    def __init__(self, vocab_size: int, width: int, depth: int, num_heads: int, max_length: int, *,
                 mlp_ratio: int = 4, norm_eps: float = 1e-6, pos_init_std: float = 0.02, rngs: nnx.Rngs):
        self.width = width
        self.max_length = max_length
        self.embed = nnx.Embed(vocab_size, width, rngs=rngs)
        self.pos = nnx.Param(pos_init_std * jax.random.normal(rngs.params(), (max_length, width), jnp.float32))
        self.layers = nnx.List(
            [EncoderLayer(width, num_heads, mlp_ratio=mlp_ratio, norm_eps=norm_eps, rngs=rngs) for _ in range(depth)]
        )
        self.norm = nnx.LayerNorm(width, epsilon=norm_eps, rngs=rngs)

    def __call__(self, ids: jax.Array, mask: jax.Array) -> tuple[jax.Array, jax.Array]:
        """ids int [B, L], mask bool [B, L] -> (tokens float32 [B, L, width], mask)."""
        length = ids.shape[1]
        if length > self.max_length:
            raise ValueError(f"sequence length {length} exceeds max_length {self.max_length}")
        mask = mask.astype(bool)
        x = self.embed(ids) + self.pos[...][:length]
        attn_mask = mask[:, None, None, :]  # [B, 1, 1(query), L(key)]: only keys are masked
        for layer in self.layers:
            x = layer(x, attn_mask)
        x = self.norm(x) * mask[..., None]
        return x.astype(jnp.float32), mask


class PrecomputedText(nnx.Module):
    """Pass-through for precomputed embeddings [B, L, width] (no parameters)."""

    def __init__(self, width: int):
        self.width = width

    def __call__(self, embeddings: jax.Array, mask: jax.Array) -> tuple[jax.Array, jax.Array]:
        if embeddings.shape[-1] != self.width:
            raise ValueError(f"embedding width {embeddings.shape[-1]} != configured width {self.width}")
        return jnp.asarray(embeddings, jnp.float32), jnp.asarray(mask, bool)


TEXT_CONDITIONERS = ("learned", "precomputed")


def make_text_conditioner(kind: str, *, width: int, rngs: nnx.Rngs | None = None, **kwargs) -> nnx.Module:
    """"learned": TextEncoder(width=width, rngs=rngs, **kwargs) (needs vocab_size, depth, num_heads,
    max_length); "precomputed": PrecomputedText(width) (takes no other arguments)."""
    if kind == "learned":
        if rngs is None:
            raise ValueError("the learned text encoder needs rngs")
        return TextEncoder(width=width, rngs=rngs, **kwargs)
    if kind == "precomputed":
        if kwargs:
            raise ValueError(f"precomputed text conditioner takes no arguments besides width, got {sorted(kwargs)}")
        return PrecomputedText(width)
    raise ValueError(f"unknown text conditioner kind {kind!r}; choices: {list(TEXT_CONDITIONERS)}")

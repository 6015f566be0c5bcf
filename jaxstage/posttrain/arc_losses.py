"""ARC post-training losses (SPEC §5, adversarial relativistic-contrastive): pure ``jax.numpy``.

The pieces, by SPEC §5 item:

1. ``generator_one_step_x0``: the generator's one-step estimate under rectified flow,
   ``x̂0 = x_t − t·G(x_t, t, c)`` with ``x_t = (1 − t)·x0 + t·eps`` and G predicting ``eps − x0``.
2. ``renoise``: real and fake are re-noised with the *same* noise at ``tau ~ p_dis``.
3. The discriminator scores every time position (scores ``[B, T]``); every loss here takes scores
   of any shape, paired elementwise (same clip, same noise, same position).
4. ``relativistic_d_loss`` / ``relativistic_g_loss``: ``mean softplus(∓(D(real) − D(fake)))``.
5. ``contrastive_d_loss`` with ``roll_prompts`` (prompts rolled by one within the batch) and
   ``contrastive_weight_mask`` (weight 0 where the rolled prompt equals the clip's own prompt).
6. ``approx_r1_penalty``: approximate R1 (on real inputs) / R2 (on fake inputs),
   ``mean (D(x + σ·n) − D(x))²`` with ``n ~ N(0, I)``.

No I/O, no modules: everything is jit-able; ``roll_prompts`` checks the static batch size.
"""

from __future__ import annotations

from typing import Any, Callable, Optional

import jax
import jax.numpy as jnp

from jaxstage.diffusion.objectives import expand_to

PyTree = Any


def _check_pair(a: jax.Array, b: jax.Array, names: str) -> None:
    if jnp.shape(a) != jnp.shape(b):
        raise ValueError(f"{names} must have the same shape (elementwise pairs), got {jnp.shape(a)} and {jnp.shape(b)}")


def _weighted_mean(values: jax.Array, weights: Optional[jax.Array]) -> jax.Array:
    """Mean of ``values``; with ``weights`` (broadcast to ``values``), ``Σ w·v / Σ w`` and 0 when ``Σ w = 0``."""
    if weights is None:
        return jnp.mean(values)
    w = jnp.broadcast_to(jnp.asarray(weights, values.dtype), values.shape)
    total = jnp.sum(w)
    return jnp.sum(w * values) / jnp.where(total > 0, total, 1.0)


def relativistic_d_loss(real_scores: jax.Array, fake_scores: jax.Array, mask: Optional[jax.Array] = None) -> jax.Array:
    """SPEC §5.4 discriminator loss: ``mean softplus(−(D(real) − D(fake)))``.

    Scores of any shape (e.g. ``[B, T]``), paired elementwise. ``mask`` (bool or float weights,
    broadcastable to the scores) turns the mean into a mean over the masked elements (0 if none).
    """
    _check_pair(real_scores, fake_scores, "real_scores and fake_scores")
    return _weighted_mean(jax.nn.softplus(-(real_scores - fake_scores)), mask)


def relativistic_g_loss(real_scores: jax.Array, fake_scores: jax.Array, mask: Optional[jax.Array] = None) -> jax.Array:
    """SPEC §5.4 generator loss: ``mean softplus(D(real) − D(fake))``; ``mask`` as in ``relativistic_d_loss``."""
    _check_pair(real_scores, fake_scores, "real_scores and fake_scores")
    return _weighted_mean(jax.nn.softplus(real_scores - fake_scores), mask)


def contrastive_d_loss(scores_matched: jax.Array, scores_rolled: jax.Array, weight: Optional[jax.Array] = None,
                       mask: Optional[jax.Array] = None) -> jax.Array:
    """SPEC §5.5 contrastive loss: ``mean softplus(−(D(real, c) − D(real, c_rolled)))``.

    Scores ``[B, ...]`` paired elementwise. Per clip, the mean over the trailing axes (over the
    elements where ``mask``, broadcastable to the scores, is set); then the mean over the batch,
    weighted by ``weight`` ``[B]`` (e.g. ``contrastive_weight_mask``) when given. Zero total
    weight gives 0, not NaN.
    """
    _check_pair(scores_matched, scores_rolled, "scores_matched and scores_rolled")
    losses = jax.nn.softplus(-(scores_matched - scores_rolled))
    if losses.ndim == 0:
        raise ValueError("contrastive_d_loss needs scores with a leading batch axis")
    axes = tuple(range(1, losses.ndim))
    if mask is None:
        per_clip = jnp.mean(losses, axis=axes)
        clip_has_elements = jnp.ones(losses.shape[:1], losses.dtype)
    else:
        m = jnp.broadcast_to(jnp.asarray(mask, losses.dtype), losses.shape)
        count = jnp.sum(m, axis=axes)
        per_clip = jnp.sum(m * losses, axis=axes) / jnp.where(count > 0, count, 1.0)
        clip_has_elements = (count > 0).astype(losses.dtype)
    w = clip_has_elements if weight is None else jnp.asarray(weight, losses.dtype) * clip_has_elements
    return _weighted_mean(per_clip, w)


def roll_prompts(cond: PyTree, shift: int = 1) -> PyTree:
    """SPEC §5.5: roll every leaf of ``cond`` by ``shift`` along its leading batch axis (``jnp.roll``).

    Clip ``i`` gets the prompt of clip ``i − shift``. Raises ValueError when the static batch size
    is below 2, when leaves disagree on it, or when ``shift`` is a multiple of it: each of those
    would pair a clip with its own prompt.
    """
    leaves = jax.tree_util.tree_leaves(cond)
    if not leaves:
        raise ValueError("roll_prompts needs at least one array leaf")
    sizes = {jnp.shape(leaf)[0] if jnp.ndim(leaf) > 0 else None for leaf in leaves}
    if len(sizes) != 1 or None in sizes:
        raise ValueError(f"roll_prompts needs one leading batch axis shared by all leaves, got sizes {sizes}")
    (batch,) = sizes
    if batch < 2:
        raise ValueError(f"roll_prompts needs batch size >= 2 (got {batch}): a clip would get its own prompt")
    if shift % batch == 0:
        raise ValueError(f"roll_prompts shift {shift} is a multiple of batch size {batch}: clips keep their prompts")
    return jax.tree_util.tree_map(lambda leaf: jnp.roll(leaf, shift, axis=0), cond)


def contrastive_weight_mask(text_ids: jax.Array, text_mask: jax.Array, rolled_ids: jax.Array,
                            rolled_mask: jax.Array) -> jax.Array:
    """SPEC §5.5: ``[B]`` float, 1 where clip ``b``'s rolled prompt differs from its own, else 0.

    Two prompts are the same when their masks agree and their token ids agree wherever the mask
    is set (padding beyond the mask is ignored). Weight 0 on duplicates keeps the discriminator
    from learning that a clip's correct prompt is wrong.
    """
    _check_pair(text_ids, rolled_ids, "text_ids and rolled_ids")
    _check_pair(text_mask, rolled_mask, "text_mask and rolled_mask")
    m = jnp.asarray(text_mask).astype(bool)
    rm = jnp.asarray(rolled_mask).astype(bool)
    axes = tuple(range(1, jnp.ndim(text_ids)))
    same_mask = jnp.all(m == rm, axis=axes)
    same_ids = jnp.all(jnp.where(m, text_ids == rolled_ids, True), axis=axes)
    return 1.0 - (same_mask & same_ids).astype(jnp.float32)


def approx_r1_penalty(score_fn: Callable[[jax.Array], jax.Array], x: jax.Array, key: jax.Array,
                      sigma: float = 0.05) -> jax.Array:
    """SPEC §5.6 approximate R1 (``x`` real) / R2 (``x`` fake): ``mean (score_fn(x + σ·n) − score_fn(x))²``.

    ``n = jax.random.normal(key, x.shape, x.dtype)``; the mean is over all score elements. Not
    divided by σ²; gradients flow through both evaluations of ``score_fn``.
    """
    x = jnp.asarray(x)
    noise = jax.random.normal(key, x.shape, x.dtype)
    diff = score_fn(x + sigma * noise) - score_fn(x)
    return jnp.mean(jnp.square(diff))


def generator_one_step_x0(x_t: jax.Array, t: jax.Array, velocity: jax.Array) -> jax.Array:
    """SPEC §5.1 one-step estimate ``x̂0 = x_t − t·v`` (rectified flow, ``v ≈ eps − x0``).

    ``t`` is a scalar or ``[B]``, broadcast over the trailing axes of ``x_t``.
    """
    return x_t - expand_to(t, x_t) * velocity


def renoise(x0: jax.Array, noise: jax.Array, tau: jax.Array) -> jax.Array:
    """SPEC §5.2 re-noising ``(1 − τ)·x0 + τ·noise``; ``τ`` scalar or ``[B]``.

    Pass the same ``noise`` (and ``τ``) for the real clip and the generator's fake.
    """
    tau = expand_to(tau, x0)
    return (1.0 - tau) * x0 + tau * noise

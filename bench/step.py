"""Train-step benchmark: compile time, step time and tokens/s for the tiny and small configs.

    python bench/step.py                      # tiny + small (configs/tiny_t2a.py, configs/synth_t2a.py)
    python bench/step.py --steps 50 --set train.batch_size=64

Timing is wall-clock over ``--steps`` steps on a fixed device-resident batch after one warm-up
step (the input pipeline is excluded; see ``--with-data``). Tokens are DiT tokens (codec frames)
per global batch. Record the printed table in docs/benchmarks.md with the device.

Side by side with PyTorch (only this comparison runs; torch is imported only in this mode):

    python bench/step.py --torch-side-by-side [--steps N] [--width 256 --depth 8 --heads 4 --seq 256
                         --batch 8 --cond-tokens 16] [--with-recipe] [--json OUT]

One DiT configuration trained three ways on this machine, in this process: stable-audio-tools'
own PyTorch `DiffusionTransformer` in torch eager, the same under `torch.compile` (a failure is
reported as "failed: <reason>"), and jaxstage's `DiffusionTransformer` in one jitted JAX step.
Every side runs the same full rectified-flow step in fp32: draw t ~ U(0, 1) and noise, x_t =
(1 - t) x0 + t noise, forward with cross-attention tokens, MSE against v = noise - x0, backward,
AdamW (lr 1e-4, betas (0.9, 0.999), eps 1e-8, weight decay 0.01). All sides are compiled and
warmed up first, then timed one step at a time in turn (round-robin, so a slow phase of a shared
machine hits every side alike); each reports the median (and min, max) ms/step and the share of
CPU time the hypervisor stole meanwhile. The ratios are torch / JAX (> 1: JAX is faster).
Activation checkpointing is off on both sides unless ``--checkpointing`` (torch `use_checkpointing`,
jaxstage `remat`). ``--with-recipe`` adds the full jaxstage train step (configs/synth_t2a_static.py
at the same widths: log-mel codec, text encoder, EMA, clipping) as an extra row.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import jax
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run from a checkout without installing, as bench/convergence.py
CONFIGS = {"tiny": ROOT / "configs" / "tiny_t2a.py", "small": ROOT / "configs" / "synth_t2a.py"}


def bench_config(name: str, path: Path, overrides: list[str], steps: int, with_data: bool) -> dict:
    from jaxstage import parallel
    from jaxstage.config import load_config
    from jaxstage.data.pipeline import BatchStream
    from jaxstage.train.trainer import fresh_state
    from jaxstage.train.state import build_experiment
    from jaxstage.train.step import compile_train_step

    cfg = load_config(path, overrides)
    exp = build_experiment(cfg)
    state = fresh_state(exp)
    step = compile_train_step(exp, state)
    stream = BatchStream(cfg, jax.process_index(), jax.process_count())
    batch = parallel.global_batch(next(stream), exp.batch_sharding)
    state, metrics = step(state, batch)  # warm-up
    jax.block_until_ready(metrics)
    start = time.perf_counter()
    for _ in range(steps):
        if with_data:
            batch = parallel.global_batch(next(stream), exp.batch_sharding)
        state, metrics = step(state, batch)
    jax.block_until_ready(metrics)
    step_s = (time.perf_counter() - start) / steps
    tokens = cfg.train.batch_size * exp.codec.num_frames(cfg.num_samples)
    params = sum(x.size for x in jax.tree.leaves(state.params))
    return {
        "config": name, "params": params, "batch": cfg.train.batch_size, "tokens_per_batch": tokens,
        "compile_s": round(step.compile_seconds, 2), "step_ms": round(step_s * 1000, 2),
        "tokens_per_s": round(tokens / step_s), "steps_per_s": round(1 / step_s, 2),
        "device": f"{jax.device_count()}x {jax.devices()[0].device_kind}", "with_data": with_data,
    }


# ----------------------------------------------------------------------------- torch side by side

ADAMW = {"lr": 1e-4, "b1": 0.9, "b2": 0.999, "eps": 1e-8, "weight_decay": 0.01}  # torch.optim.AdamW's
# defaults except lr; given explicitly to both sides (optax.adamw's default weight decay differs)


@dataclass(frozen=True)
class DiTSize:
    """One DiT configuration and batch, shared by the torch and JAX sides (ff_mult 4, prepend
    timestep token, no qk-norm: stable-audio-tools' defaults)."""

    width: int = 256
    depth: int = 8
    heads: int = 4
    seq: int = 256  # frames (DiT tokens) per example
    batch: int = 8
    cond_tokens: int = 16  # cross-attention tokens per example
    cond_dim: int = 128  # their width (jaxstage's default text.width)
    io_channels: int = 64


def synthetic_batch(size: DiTSize, seed: int = 0) -> dict[str, np.ndarray]:
    """Clean inputs x0 [B, T, io] and conditioning tokens [B, L, cond_dim] (channels-last, fp32)."""
    rng = np.random.default_rng(seed)
    return {"x0": rng.standard_normal((size.batch, size.seq, size.io_channels), np.float32),
            "cond": rng.standard_normal((size.batch, size.cond_tokens, size.cond_dim), np.float32)}


def _one_line(err: BaseException) -> str:
    """`Type: first line of the message`, for a "failed: ..." entry."""
    lines = str(err).strip().splitlines()
    return f"{type(err).__name__}: {lines[0] if lines else ''}"[:300]


def _torch_dit(size: DiTSize):
    """stable-audio-tools' `DiffusionTransformer` at ``size``, built from the exporter's kwargs."""
    from jaxstage.tools.export.sat_config import dit_config
    from jaxstage.tools.export.sat_reference import load_dit_class

    dims = {"io_channels": size.io_channels, "input_concat_dim": 0, "cond_token_dim": size.cond_dim,
            "global_cond_dim": 0}
    kwargs = dit_config(dims, embed_dim=size.width, depth=size.depth, num_heads=size.heads,
                        project_cond_tokens=True, global_cond_type="prepend", qk_norm="none", ff_mult=4)
    return load_dit_class()(diffusion_objective="rectified_flow", **kwargs)


def _dynamo_graphs(torch) -> int | None:
    """Graphs torch.compile has produced so far in this process (more than one: graph breaks)."""
    try:
        return int(torch._dynamo.utils.counters["stats"]["unique_graphs"])
    except Exception:  # a private counter: absent in some versions
        return None


@dataclass
class Contender:
    """One side of the comparison, built, compiled and warmed up. ``run_step()`` runs one full
    training step and returns once it is done; ``loss()``: the last step's loss; ``info``: its
    compile figures."""

    run_step: Callable[[], None]
    loss: Callable[[], float]
    info: dict


def prepare_torch(size: DiTSize, batch: dict, *, compile: bool, warmup: int, checkpointing: bool) -> Contender:
    """stable-audio-tools' DiT training in torch, eager or with the model ``torch.compile``d.

    The plain loop: ``opt.zero_grad(); loss = ((model(x_t, t, cross_attn_cond=c) - v)**2).mean();
    loss.backward(); opt.step()``. Under compile the model (forward and backward) is compiled; the
    optimizer step stays eager. ``first_step_s``: wall time of the first step (with compile: the
    compile time of forward and backward plus one step); ``warmup`` counts that step.
    """
    import torch

    torch.manual_seed(0)
    model = _torch_dit(size).train()
    opt = torch.optim.AdamW(model.parameters(), lr=ADAMW["lr"], betas=(ADAMW["b1"], ADAMW["b2"]),
                            eps=ADAMW["eps"], weight_decay=ADAMW["weight_decay"])
    forward = torch.compile(model) if compile else model
    x0 = torch.from_numpy(batch["x0"]).transpose(1, 2).contiguous()  # the reference is channels-first
    cond = torch.from_numpy(batch["cond"])
    last = {}

    def train_step() -> None:  # synchronous: returns after opt.step()
        t = torch.rand(x0.shape[0])
        noise = torch.randn_like(x0)
        x_t = (1 - t[:, None, None]) * x0 + t[:, None, None] * noise
        opt.zero_grad()
        out = forward(x_t, t, cross_attn_cond=cond, use_checkpointing=checkpointing)
        loss = ((out - (noise - x0)) ** 2).mean()
        loss.backward()
        opt.step()
        last["loss"] = loss.item()

    graphs_before = _dynamo_graphs(torch)
    start = time.perf_counter()
    train_step()
    info = {"first_step_s": round(time.perf_counter() - start, 2)}
    for _ in range(warmup - 1):
        train_step()
    if compile and graphs_before is not None:
        info["graphs"] = _dynamo_graphs(torch) - graphs_before  # forward graphs; 1 = no graph break
    return Contender(train_step, lambda: last["loss"], info)


def compile_rf_dit_step(model, batch: dict, adamw: dict | None = None):
    """The plain rectified-flow step of a DiT (draw t and noise, forward with the cross tokens, MSE
    against v = noise - x0, backward, AdamW) compiled ahead of time for ``batch`` (``x0``, ``cond``).

    Returns (compiled, run, key, x0, cond, compile_s): ``run`` holds params, opt_state, step and loss;
    call ``compiled(run["params"], run["opt_state"], fold_in(key, step), x0, cond)``."""
    import jax.numpy as jnp
    import optax
    from flax import nnx

    adamw = ADAMW if adamw is None else adamw
    graphdef, params, buffers = nnx.split(model, nnx.Param, ...)
    params, buffers = nnx.to_pure_dict(params), nnx.to_pure_dict(buffers)
    tx = optax.adamw(adamw["lr"], b1=adamw["b1"], b2=adamw["b2"], eps=adamw["eps"],
                     weight_decay=adamw["weight_decay"])

    def train_step(params, opt_state, key, x0, cond):
        t_key, noise_key = jax.random.split(key)
        t = jax.random.uniform(t_key, (x0.shape[0],))
        noise = jax.random.normal(noise_key, x0.shape, x0.dtype)
        x_t = (1 - t[:, None, None]) * x0 + t[:, None, None] * noise

        def loss_fn(p):
            out = nnx.merge(graphdef, p, buffers)(x_t, t, cross_tokens=cond).out
            return jnp.mean((out - (noise - x0)) ** 2)

        loss, grads = jax.value_and_grad(loss_fn)(params)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    x0, cond = jnp.asarray(batch["x0"]), jnp.asarray(batch["cond"])
    key = jax.random.key(0)
    run = {"params": params, "opt_state": tx.init(params), "step": 0, "loss": None}
    # jit boundary: noise, forward, backward and the AdamW update are one XLA program, compiled
    # once ahead of time; params and optimizer state are donated (updated in place, as torch's
    # in-place opt.step()), the batch and the per-step key are plain arguments.
    start = time.perf_counter()
    compiled = jax.jit(train_step, donate_argnums=(0, 1)).lower(
        run["params"], run["opt_state"], key, x0, cond).compile()
    return compiled, run, key, x0, cond, round(time.perf_counter() - start, 2)


def prepare_jax(size: DiTSize, batch: dict, *, warmup: int, remat: bool) -> Contender:
    """jaxstage's `DiffusionTransformer` alone (no text encoder, codec, EMA, regime) in one jitted
    step, compiled ahead of time; ``compile_s``: the lower + compile time."""
    from flax import nnx

    from jaxstage.models.dit import DiffusionTransformer

    model = DiffusionTransformer(io_channels=size.io_channels, embed_dim=size.width, depth=size.depth,
                                 num_heads=size.heads, cond_token_dim=size.cond_dim, remat=remat,
                                 rngs=nnx.Rngs(0))
    compiled, run, key, x0, cond, compile_s = compile_rf_dit_step(model, batch)
    info = {"compile_s": compile_s, "params": sum(int(a.size) for a in jax.tree.leaves(run["params"]))}

    def run_step() -> None:  # blocks until the step is done, as torch's loop does
        key_i = jax.random.fold_in(key, run["step"])
        run["params"], run["opt_state"], run["loss"] = compiled(run["params"], run["opt_state"], key_i, x0, cond)
        run["step"] += 1
        jax.block_until_ready((run["params"], run["loss"]))

    for _ in range(warmup):
        run_step()
    return Contender(run_step, lambda: float(run["loss"]), info)


def _cpu_jiffies() -> tuple[int, int] | None:
    """(steal, total) CPU time of the whole machine from /proc/stat (Linux), else None. Steal is
    time the hypervisor gave to other guests: on a shared VM it inflates every side's step time."""
    try:
        with open("/proc/stat") as f:
            fields = [int(v) for v in f.readline().split()[1:9]]
    except (OSError, ValueError):
        return None
    return fields[7], sum(fields)


def time_interleaved(contenders: dict[str, Contender], steps: dict[str, int]) -> dict[str, dict]:
    """Time ``steps[name]`` steps of each contender, round-robin one step at a time, so slow
    phases of a shared machine hit every side alike. Per side: median ms (``step_ms``; robust to
    a stray slow step), min and max, the share of CPU time stolen by the hypervisor meanwhile
    (``steal_pct``), and the last loss. A side that raises is recorded as failed and dropped."""
    times: dict[str, list[float]] = {name: [] for name in contenders}
    steal = {name: [0, 0] for name in contenders}
    failed: dict[str, str] = {}
    while any(len(times[n]) < steps[n] for n in contenders if n not in failed):
        for name, contender in contenders.items():
            if name in failed or len(times[name]) >= steps[name]:
                continue
            before, start = _cpu_jiffies(), time.perf_counter()
            try:
                contender.run_step()
            except Exception as err:
                failed[name] = _one_line(err)
                continue
            times[name].append((time.perf_counter() - start) * 1000)
            after = _cpu_jiffies()
            if before and after:
                steal[name][0] += after[0] - before[0]
                steal[name][1] += after[1] - before[1]
    rows = {}
    for name, contender in contenders.items():
        if name in failed:
            rows[name] = {"failed": failed[name]}
            continue
        ms, loss = times[name], contender.loss()
        if not math.isfinite(loss):
            rows[name] = {"failed": f"loss is {loss}"}
            continue
        stolen, total = steal[name]
        rows[name] = {"step_ms": round(float(np.median(ms)), 2), "step_ms_min": round(min(ms), 2),
                      "step_ms_max": round(max(ms), 2), "steps": len(ms), **contender.info,
                      # jiffies are 10 ms: under ~1 s of machine time the share means nothing
                      "steal_pct": round(100 * stolen / total, 1) if total >= 100 else None,
                      "loss": round(loss, 4)}
    return rows


def recipe_overrides(size: DiTSize) -> list[str]:
    """`--set` overrides that give configs/synth_t2a_static.py this DiT and batch: the log-mel codec
    (hop 128 at 8 kHz) with ``seq`` frames of ``io_channels`` bands, ``cond_tokens`` text tokens of
    ``cond_dim`` width."""
    hop, rate = 128, 8000
    return [f"model.embed_dim={size.width}", f"model.depth={size.depth}", f"model.num_heads={size.heads}",
            f"train.batch_size={size.batch}", f"codec.n_mels={size.io_channels}", f"codec.hop_length={hop}",
            f"data.sample_rate={rate}", f"data.clip_seconds={(size.seq - 1) * hop / rate}",  # 1 + N // hop
            f"data.text_max_length={size.cond_tokens}", f"text.width={size.cond_dim}"]


def prepare_recipe(size: DiTSize, *, warmup: int) -> Contender:
    """The full jaxstage train step (`compile_train_step`) of configs/synth_t2a_static.py at ``size``
    (see `recipe_overrides`) on one fixed batch: codec encode, text encoder, EMA, clipping included."""
    from jaxstage import parallel
    from jaxstage.config import load_config
    from jaxstage.data.pipeline import BatchStream
    from jaxstage.train.trainer import fresh_state
    from jaxstage.train.state import build_experiment
    from jaxstage.train.step import compile_train_step

    overrides = recipe_overrides(size)
    cfg = load_config(ROOT / "configs" / "synth_t2a_static.py", overrides)
    exp = build_experiment(cfg)
    run = {"state": fresh_state(exp), "metrics": None}
    step = compile_train_step(exp, run["state"])
    batch = parallel.global_batch(next(BatchStream(cfg, jax.process_index(), jax.process_count())),
                                  exp.batch_sharding)

    def run_step() -> None:
        run["state"], run["metrics"] = step(run["state"], batch)
        jax.block_until_ready(run["metrics"])

    for _ in range(warmup):
        run_step()
    info = {"compile_s": round(step.compile_seconds, 2), "overrides": overrides,
            "params": sum(int(a.size) for a in jax.tree.leaves(run["state"].params))}
    return Contender(run_step, lambda: float(run["metrics"]["loss"]), info)


def gemm_throughput(size: DiTSize, repeats: int = 20) -> list[dict]:
    """GFLOP/s of the DiT's main matrix products, XLA (jit) vs torch, same fp32 operands.

    Shapes at ``size``: tokens N = batch x (seq + 1), width D: the fused qkv projection
    [N, D] x [D, 3D], the GLU input [N, D] x [D, 8D], the feed-forward output [N, 4D] x [4D, D]
    and a weight gradient [D, N] x [N, 3D]. Each product is timed ``repeats`` times after a warm-up;
    the two libraries alternate per shape.
    """
    import torch

    n, d = size.batch * (size.seq + 1), size.width
    shapes = {"qkv [N,D]x[D,3D]": (n, d, 3 * d), "glu [N,D]x[D,8D]": (n, d, 8 * d),
              "ff out [N,4D]x[4D,D]": (n, 4 * d, d), "weight grad [D,N]x[N,3D]": (d, n, 3 * d)}
    rows = []
    rng = np.random.default_rng(0)
    for name, (m, k, cols) in shapes.items():
        a = rng.standard_normal((m, k), np.float32)
        b = rng.standard_normal((k, cols), np.float32)
        matmul = jax.jit(lambda x, y: x @ y)  # jit boundary: one XLA dot per call
        ja, jb = jax.device_put(a), jax.device_put(b)
        ta, tb = torch.from_numpy(a), torch.from_numpy(b)
        jax.block_until_ready(matmul(ja, jb))
        torch.matmul(ta, tb)
        start = time.perf_counter()
        for _ in range(repeats):
            out = matmul(ja, jb)
        jax.block_until_ready(out)
        xla_s = (time.perf_counter() - start) / repeats
        start = time.perf_counter()
        for _ in range(repeats):
            torch.matmul(ta, tb)
        torch_s = (time.perf_counter() - start) / repeats
        flops = 2 * m * k * cols
        # 3 significant figures: a tiny GEMM on a loaded CPU can run below 0.05 GFLOP/s (not 0.0)
        rows.append({"product": name, "shape": [m, k, cols], "xla_gflops": float(f"{flops / xla_s / 1e9:.3g}"),
                     "torch_gflops": float(f"{flops / torch_s / 1e9:.3g}")})
    return rows


def attention_time(size: DiTSize, repeats: int = 10) -> dict:
    """ms for one self-attention forward + backward at ``size`` ([B, seq + 1, heads, D / heads]):
    `jax.nn.dot_product_attention` (``jax_ms``), jaxstage's `models.attention.attention` with the
    ``xla`` kernel, what the DiT calls (``jaxstage_ms``; on CPU its own formulation, see
    `models.attention.xla_attention`), and torch's fused `scaled_dot_product_attention`, what
    stable-audio-tools calls on CPU (``torch_ms``). Medians of ``repeats`` calls taken in turn."""
    import jax.numpy as jnp
    import torch

    from jaxstage.models.attention import attention

    shape = (size.batch, size.seq + 1, size.heads, size.width // size.heads)
    q = np.random.default_rng(0).standard_normal(shape, np.float32)

    def grad_of(fn):  # jit boundary: forward + backward of one attention call
        return jax.jit(jax.grad(lambda x: jnp.sum(fn(x, 0.5 * x, 0.25 * x) ** 2)))

    jq = jax.device_put(q)
    tq = torch.from_numpy(q).transpose(1, 2).contiguous().requires_grad_(True)  # [B, H, T, Dh]

    def torch_step() -> None:
        out = torch.nn.functional.scaled_dot_product_attention(tq, 0.5 * tq, 0.25 * tq)
        (out ** 2).sum().backward()

    steps = {"jax": lambda f=grad_of(jax.nn.dot_product_attention): jax.block_until_ready(f(jq)),
             "jaxstage": lambda f=grad_of(lambda q, k, v: attention(q, k, v, implementation="xla")):
                 jax.block_until_ready(f(jq)),
             "torch": torch_step}
    times: dict[str, list[float]] = {name: [] for name in steps}
    for step in steps.values():
        step()
    for _ in range(repeats):
        for name, step in steps.items():
            start = time.perf_counter()
            step()
            times[name].append((time.perf_counter() - start) * 1000)
    return {"shape": list(shape), **{f"{name}_ms": round(float(np.median(ts)), 2) for name, ts in times.items()}}


def _ratio(numerator: dict, denominator: dict) -> float | None:
    if "step_ms" not in numerator or "step_ms" not in denominator:
        return None
    return round(numerator["step_ms"] / denominator["step_ms"], 2)


def torch_side_by_side(size: DiTSize = DiTSize(), *, torch_steps: int = 5, jax_steps: int = 10,
                       warmup: int = 1, checkpointing: bool = False, with_compile: bool = True,
                       with_recipe: bool = False) -> dict:
    """Time the same DiT training step in torch eager, torch.compile and JAX; return the figures
    and the ratios torch/JAX (> 1: JAX is faster).

    Every side is built, compiled and warmed up first, then all are timed together (see
    `time_interleaved`). A torch.compile failure (while compiling or timing) is recorded as
    ``{"failed": "<reason>"}`` and its ratio is None; ``with_compile=False`` skips it
    (``{"skipped": True}``). ``with_recipe`` adds the full jaxstage step (`prepare_recipe`).
    """
    import torch

    threads = len(os.sched_getaffinity(0))
    torch.set_num_threads(threads)
    batch = synthetic_batch(size)
    result = {
        "config": {**asdict(size), "ff_mult": 4, "activation_checkpointing": checkpointing,
                   "precision": "fp32", "adamw": ADAMW, "warmup_steps": warmup},
        "device": f"{jax.devices()[0].device_kind} ({threads} threads)",
        "versions": {"torch": torch.__version__, "jax": jax.__version__},
        "loadavg_start": os.getloadavg()[0],  # > ~0.5 before a run: something else shares the cores
    }
    contenders = {
        "jax_jit": prepare_jax(size, batch, warmup=warmup, remat=checkpointing),
        "torch_eager": prepare_torch(size, batch, compile=False, warmup=warmup, checkpointing=checkpointing),
    }
    steps = {"jax_jit": jax_steps, "torch_eager": torch_steps, "torch_compile": torch_steps,
             "jaxstage_recipe": jax_steps}
    skipped = {}
    if not with_compile:
        skipped["torch_compile"] = {"skipped": True}
    else:
        try:  # the first steps compile: inductor needs a C++ toolchain, dynamo may reject the model
            contenders["torch_compile"] = prepare_torch(size, batch, compile=True, warmup=max(warmup, 2),
                                                        checkpointing=checkpointing)
        except Exception as err:
            skipped["torch_compile"] = {"failed": _one_line(err)}
    if with_recipe:
        contenders["jaxstage_recipe"] = prepare_recipe(size, warmup=warmup)
    result.update(time_interleaved(contenders, steps))
    result.update(skipped)
    result["gemm"] = gemm_throughput(size)  # where the JAX step's time goes on this CPU
    result["attention"] = attention_time(size)
    result["ratio_torch_eager_over_jax"] = _ratio(result["torch_eager"], result["jax_jit"])
    result["ratio_torch_compile_over_jax"] = _ratio(result["torch_compile"], result["jax_jit"])
    if with_recipe:
        result["ratio_torch_eager_over_recipe"] = _ratio(result["torch_eager"], result["jaxstage_recipe"])
    result["loadavg_end"] = os.getloadavg()[0]
    return result


def print_side_by_side(result: dict) -> None:
    """A markdown table of the side-by-side figures."""
    c = result["config"]
    print(f"\nDiT {c['width']} wide, {c['depth']} deep, {c['heads']} heads; batch {c['batch']} x {c['seq']} frames "
          f"x {c['io_channels']} channels; {c['cond_tokens']} cross-attention tokens of width {c['cond_dim']}; "
          f"fp32 AdamW; activation checkpointing {'on' if c['activation_checkpointing'] else 'off'}; "
          f"{result['device']}")
    jax_ms = result["jax_jit"].get("step_ms")
    rows = [("torch eager (stable-audio-tools DiT)", result["torch_eager"], "first_step_s"),
            ("torch.compile (stable-audio-tools DiT)", result["torch_compile"], "first_step_s"),
            ("jax jit (jaxstage DiT)", result["jax_jit"], "compile_s")]
    if "jaxstage_recipe" in result:
        rows.append(("jaxstage full train step (recipe)", result["jaxstage_recipe"], "compile_s"))
    print("\n| side | ms/step (median) | min-max | first step / compile s | CPU stolen % | x jax |")
    print("|---|---|---|---|---|---|")
    for name, row, first in rows:
        if "step_ms" not in row:
            print(f"| {name} | {'skipped' if row.get('skipped') else 'failed: ' + row['failed']} | | | | |")
            continue
        vs_jax = f"{row['step_ms'] / jax_ms:.2f}" if jax_ms else ""
        print(f"| {name} | {row['step_ms']} | {row['step_ms_min']}-{row['step_ms_max']} | {row[first]} | "
              f"{row['steal_pct']} | {vs_jax} |")
    if result.get("gemm"):
        print("\n| matrix product (fp32) | M x K x N | XLA GFLOP/s | torch GFLOP/s |")
        print("|---|---|---|---|")
        for row in result["gemm"]:
            print(f"| {row['product']} | {' x '.join(map(str, row['shape']))} | {row['xla_gflops']} | "
                  f"{row['torch_gflops']} |")
    if result.get("attention"):
        a = result["attention"]
        print(f"\nself-attention {a['shape']} forward + backward: jax.nn.dot_product_attention {a['jax_ms']} ms, "
              f"jaxstage attention {a.get('jaxstage_ms')} ms, torch scaled_dot_product_attention {a['torch_ms']} ms")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", nargs="+", default=list(CONFIGS), choices=list(CONFIGS))
    parser.add_argument("--steps", type=int, default=None,
                        help="timed steps (default 20; side by side: 5 torch, 10 jax)")
    parser.add_argument("--with-data", action="store_true", help="include the grain input pipeline")
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    side = parser.add_argument_group("torch side by side")
    side.add_argument("--torch-side-by-side", action="store_true",
                      help="run only the stable-audio-tools (torch) vs jaxstage (jax) DiT comparison")
    for name, default in asdict(DiTSize()).items():
        side.add_argument(f"--{name.replace('_', '-')}", type=int, default=default)
    side.add_argument("--warmup", type=int, default=1, help="untimed steps after compile (torch.compile: >= 2)")
    side.add_argument("--checkpointing", action="store_true", help="activation checkpointing on both sides")
    side.add_argument("--no-compile", action="store_true", help="skip the torch.compile row")
    side.add_argument("--with-recipe", action="store_true", help="add the full jaxstage train step")
    side.add_argument("--json", type=Path, help="write the side-by-side result here")
    args = parser.parse_args()
    if args.torch_side_by_side:
        size = DiTSize(**{name: getattr(args, name) for name in asdict(DiTSize())})
        result = torch_side_by_side(size, torch_steps=args.steps or 5, jax_steps=args.steps or 10,
                                    warmup=args.warmup, checkpointing=args.checkpointing,
                                    with_compile=not args.no_compile, with_recipe=args.with_recipe)
        print(json.dumps(result))
        print_side_by_side(result)
        if args.json:
            args.json.write_text(json.dumps(result, indent=2) + "\n")
        return
    if args.json:
        parser.error("--json goes with --torch-side-by-side")
    args.steps = args.steps or 20
    rows = [bench_config(n, CONFIGS[n], args.overrides, args.steps, args.with_data) for n in args.configs]
    for row in rows:
        print(json.dumps(row))
    print("\n| config | params | batch | tokens/batch | compile s | step ms | tokens/s | device |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['config']} | {r['params']:,} | {r['batch']} | {r['tokens_per_batch']} | {r['compile_s']} | "
              f"{r['step_ms']} | {r['tokens_per_s']:,} | {r['device']} |")


if __name__ == "__main__":
    main()

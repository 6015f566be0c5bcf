"""Accelerator benchmark (issue 21): jaxstage train steps, stable-audio-tools side by side, generation latency.

One command on a GPU machine (jax with CUDA and torch preinstalled; see docs/accelerator.md):

    bash bench/accelerator_setup.sh --run --peak-tflops 989

(it installs the wheels carried in .whl/, fetched beforehand with ``bash bench/accelerator_setup.sh
--download`` where PyPI is reachable: only stable-audio-tools, for the torch rows; then runs this
script with the arguments given; ``python3 bench/accelerator.py --peak-tflops 989`` alone runs all
but the torch rows.)
(``--peak-tflops``: the device's dense bf16 peak, 989 for an H100 SXM.) On CPU, at a tiny size, the
same sections run end to end in about a minute (the test suite does this):

    python bench/accelerator.py --tiny --out /tmp/acc.json --md /tmp/acc.md

Writes ``--out`` (default docs/accelerator.json) after every row, so a killed run keeps what it
measured, and regenerates the markdown tables (``--md``, default docs/accelerator.md's generated
block; ``--md-only`` redraws them from the JSON). Every planned row is in the JSON: measured
(``status: ok``), ``skipped`` or ``failed``, with a ``reason``.

Sizes (``--size``): ``sao_small`` = Stable Audio Open Small's DiT (1024 wide, 16 deep, 8 heads, qk
LayerNorm, cond tokens projected, 256 latent frames of 64, 64 T5 tokens of 768), batch 16;
``sao`` = SAO 1.0's (1536, 24, 24 heads, cond tokens unprojected, 1024 frames, 130 tokens of 768),
batch 4; ``tiny`` (width 64, depth 2, 2 heads, 16 frames, 8 tokens of 32, batch 2). ``--batch``,
``--frames``, ``--depth`` override them (small machines: docs/accelerator.md's CPU figures).

Sections, per size:

- ``jax`` rows: {``full`` = jaxstage's own train step (`compile_train_step`) of
  configs/sao_small_finetune.py / configs/sao_finetune.py with the stage-adaptive recipe (REPA
  alignment to precomputed SSL targets, adaptive levels, structure regularizer, EMA, clipping,
  non-finite guard) on a device-resident synthetic batch of the prepared-record shapes; ``plain`` =
  the DiT + rectified-flow loss + AdamW, the step the torch side runs} x {fp32, bf16 compute (fp32
  master weights)} x {xla, cudnn attention} x {remat none, full}. Per row: median ms/step over
  ``--steps`` blocking steps after warm-up, tokens/s (latent frames x batch / step time), analytic
  model FLOPs per step (`model_flops`) next to XLA's `cost_analysis()` figure, MFU = analytic FLOPs /
  step time / peak, memory (the compiled executable's arguments + outputs - aliased + temporaries;
  on GPU also the device's ``peak_bytes_in_use``, a process-wide running maximum), compile seconds
  and whether the optimized HLO calls cuDNN's fused attention (``__cudnn$fmha``). The full recipe's
  regime and structure events run every ``--cadence`` steps (one event per ``--cadence`` steps; the
  median is a plain step).
- ``torch`` rows: stable-audio-tools 0.0.19's `DiffusionTransformer` at the same size, eager and
  ``torch.compile``d, bf16 autocast (GPU) and SDPA attention, the same step and AdamW, timed
  round-robin one step at a time with the matching jaxstage plain row (bf16/cudnn/no remat on GPU,
  fp32/xla on CPU).
- ``overhead``: adaptive / static step-time ratio of the full recipe (the static recipe: regime off,
  no alignment, fixed levels, no structure regularizer), interleaved rounds of ``--cadence`` steps,
  per-position medians (bench/regime_overhead.py's estimator); reported at the measured cadence and
  extrapolated to the config's (500: the event cost divided by 500).
- ``generation``: latency of 8-step ping-pong sampling at batch 1 (one DiT call per step, no CFG) of
  the SAO Small shape (256 frames = 11.9 s at 44.1 kHz), the DiT alone and DiT + Oobleck decode
  (SAO's VAE shape, random weights), median of ``--gen-runs`` after a compile.

Plan and budget: the grid is 16 jax rows per size; fp32 x cudnn rows are skipped (cuDNN's fused
attention needs bf16/fp16) and, unless ``--full-grid``, the rows outside `DEFAULT_PLAN` are skipped
with that reason. Rows run in priority order and once ``--budget-s`` (default 360 s on GPU) is spent
the rest are skipped ("time budget"), so the run ends within about 8 minutes on one H100.

Nothing here needs grain or librosa: batches are synthetic and device-resident, and the prepared
directory the SAO configs point at is a stand-in dataset.json (never read past its shapes). If grain
is not installed it is replaced by an inert stub module before jaxstage is imported
(``meta.stubbed_modules``). stable-audio-tools is needed for the torch rows only (--no-deps wheel).
"""

from __future__ import annotations

import argparse
import gc
import importlib.util
import inspect
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import types
from dataclasses import asdict, dataclass, replace
from pathlib import Path

T0 = time.monotonic()  # the budget counts from here (start-up and the XLA flag check included)
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
XLA_FLAGS_FILE = ROOT / "launch" / "gpu_xla_flags.env"
DEFAULT_OUT = ROOT / "docs" / "accelerator.json"
DEFAULT_MD = ROOT / "docs" / "accelerator.md"
MD_BEGIN, MD_END = "<!-- accelerator tables: begin (generated) -->", "<!-- accelerator tables: end -->"
CONFIG_CADENCE = 500  # regime.every = struct.every in configs/sao_finetune.py


# ----------------------------------------------------------------------------------------- sizes


@dataclass(frozen=True)
class Size:
    """One DiT shape and batch; ``config``: the jaxstage config of its full recipe."""

    name: str
    width: int
    depth: int
    heads: int
    frames: int  # latent frames (DiT tokens) per example
    cond_tokens: int  # cross-attention tokens per example (plain step)
    cond_dim: int
    batch: int
    qk_norm: bool
    project_cond: bool
    config: str
    text_len: int  # T5 tokens in the prepared records (the full recipe adds its number tokens)
    io: int = 64
    ff_mult: int = 4
    ssl_dim: int = 768
    vae: str = "sao"  # the Oobleck shape: "sao" (OobleckConfig() defaults) or "tiny"

    @property
    def head_dim(self) -> int:
        return self.width // self.heads


SIZES = {
    "sao_small": Size("sao_small", 1024, 16, 8, 256, 64, 768, 16, True, True, "configs/sao_small_finetune.py", 64),
    "sao": Size("sao", 1536, 24, 24, 1024, 130, 768, 4, False, False, "configs/sao_finetune.py", 128),
    "tiny": Size("tiny", 64, 2, 2, 16, 8, 32, 2, True, True, "configs/sao_small_finetune.py", 8, ssl_dim=32,
                 vae="tiny"),
}
KINDS, PRECISIONS, ATTENTIONS, REMATS = ("full", "plain"), ("fp32", "bf16"), ("xla", "cudnn"), ("none", "full")
DTYPE_NAME = {"fp32": "float32", "bf16": "bfloat16"}
# The default plan per size: (kind, precision, attention, remat), most important first. The rows of the
# 2 x 2 x 2 x 2 grid not listed are skipped ("not in the default plan") unless --full-grid.
DEFAULT_PLAN = {
    "sao_small": [("plain", "bf16", "cudnn", "none"), ("full", "bf16", "cudnn", "none"),
                  ("full", "bf16", "cudnn", "full"), ("plain", "bf16", "xla", "none"),
                  ("plain", "fp32", "xla", "none"), ("plain", "bf16", "cudnn", "full"),
                  ("full", "bf16", "xla", "none"), ("full", "fp32", "xla", "none")],
    "sao": [("plain", "bf16", "cudnn", "none"), ("full", "bf16", "cudnn", "full"),
            ("plain", "bf16", "xla", "none"), ("plain", "bf16", "cudnn", "full"),
            ("full", "bf16", "cudnn", "none"), ("plain", "fp32", "xla", "full")],
    # tiny (CPU, the test suite): the torch and overhead sections time plain and full fp32/xla/none; the
    # other rows are skipped to keep the test short (--full-grid runs them: bf16 and remat run on CPU too)
}


def tiny_vae_config():
    from jaxstage.models.oobleck import OobleckConfig

    return OobleckConfig(channels=4, c_mults=(1, 2), strides=(2, 2))  # hop 4


def vae_config(size: Size):
    from jaxstage.models.oobleck import OobleckConfig

    return tiny_vae_config() if size.vae == "tiny" else OobleckConfig()


# ----------------------------------------------------------------------------------------- FLOPs


def model_flops(size: Size, batch: int | None = None, *, train: bool = True, cond_tokens: int | None = None) -> float:
    """Analytic model FLOPs of one DiT training step (``train``) or forward pass.

    A matmul [m, k] x [k, n] is 2mkn FLOPs. With B examples, T = frames + 1 tokens (the prepended
    timestep token), S cross tokens of width C, width D, F = ff_mult D, Ck = D if the cond tokens are
    projected (else C: SAO 1.0's unprojected 768-wide context):

      per block  self-attention projections 8 B T D^2 (qkv 6, out 2) + scores and values 4 B T^2 D
                 cross-attention q and out 4 B T D^2, keys and values 4 B S C Ck, scores/values 4 B T S D
                 SwiGLU feed-forward 6 B T D F (in: D -> 2F, out: F -> D)
      outside    project in/out 4 B T io D, 1x1 pre/post convs 4 B T io^2, cond-token MLP
                 2 B S (C Ck + Ck^2), timestep MLP 2 B (256 D + D^2)

    training = 3 x forward (the backward pass is twice the forward). Model FLOPs, not hardware FLOPs:
    rematerialization does not change them; norms, softmax and the optimizer are left out.
    """
    b = size.batch if batch is None else batch
    s = size.cond_tokens if cond_tokens is None else cond_tokens
    t, d, c, io = size.frames + 1, size.width, size.cond_dim, size.io
    ck = d if size.project_cond else c
    f = size.ff_mult * d
    block = (8 * b * t * d * d + 4 * b * t * t * d
             + 4 * b * t * d * d + 4 * b * s * c * ck + 4 * b * t * s * d
             + 6 * b * t * d * f)
    outside = 4 * b * t * io * d + 4 * b * t * io * io + 2 * b * s * (c * ck + ck * ck) + 2 * b * (256 * d + d * d)
    forward = size.depth * block + outside
    return float(3 * forward if train else forward)


# ----------------------------------------------------------------------------------------- environment


class _StubMeta(type):
    def __getattr__(cls, name):  # grain.transforms.RandomMap -> a subclassable placeholder class
        if name.startswith("__"):
            raise AttributeError(name)
        return _StubMeta(name, (), {})


def _stub_attribute(name: str):
    if name.startswith("__"):  # __file__, __spec__, ...: absent, as inspect and importlib expect
        raise AttributeError(name)
    return _StubMeta(name, (), {})


def stub_missing(names=("grain",)) -> list[str]:
    """Replace the packages ``names`` that do not import by inert modules (any attribute is a placeholder
    class; `jaxstage.data.pipeline` subclasses two of them at import). The benchmark never reads data
    through them. Returns the stubbed names."""
    stubbed = []
    for name in names:
        try:
            importlib.import_module(name)
            continue
        except ImportError:
            pass
        for sub in (name, f"{name}.sources", f"{name}.transforms", f"{name}.python"):
            module = types.ModuleType(sub)
            module.__getattr__ = _stub_attribute
            module.__path__ = []
            sys.modules[sub] = module
        stubbed.append(name)
    return stubbed


def read_flags_file(path: Path = XLA_FLAGS_FILE) -> str:
    """JAXSTAGE_GPU_XLA_FLAGS of launch/gpu.env (parsed by bash, as the launch recipes source it)."""
    out = subprocess.run(["bash", "-c", f'source "{path}" >/dev/null; printf %s "$JAXSTAGE_GPU_XLA_FLAGS"'],
                         capture_output=True, text=True, timeout=30)
    return out.stdout.strip()


def probe_backend(flags: str) -> tuple[str | None, str]:
    """(JAX's default backend, "") with ``flags`` added to XLA_FLAGS, checked in a child process (an
    unknown flag aborts XLA at start-up), or (None, why it failed)."""
    env = {**os.environ, "XLA_FLAGS": f"{os.environ.get('XLA_FLAGS', '')} {flags}".strip()}
    code = "import jax, jax.numpy as jnp; jnp.ones(4).sum().block_until_ready(); print(jax.default_backend())"
    try:
        proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=180)
    except subprocess.TimeoutExpired:
        return None, "the check timed out"
    if proc.returncode != 0:
        return None, ((proc.stderr.strip().splitlines() or [""])[-1])[:300]
    return proc.stdout.strip().splitlines()[-1], ""


def one_line(err: BaseException) -> str:
    lines = str(err).strip().splitlines()
    return f"{type(err).__name__}: {lines[0] if lines else ''}"[:300]


def _load_bench(name: str):
    """bench/<name>.py as a module (bench/ is not a package)."""
    key = f"_bench_{name}"
    if key not in sys.modules:
        spec = importlib.util.spec_from_file_location(key, ROOT / "bench" / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[key] = module
        spec.loader.exec_module(module)
    return sys.modules[key]


# ----------------------------------------------------------------------------------------- results


class Results:
    """The JSON document (meta + rows), rewritten after every row; the markdown redrawn from it."""

    def __init__(self, out: Path, md: Path | None, meta: dict):
        self.out, self.md = out, md
        self.doc = {"meta": meta, "rows": []}

    def add(self, row: dict) -> dict:
        row = {k: v for k, v in row.items() if v is not None}
        self.doc["rows"] = [r for r in self.doc["rows"] if r["id"] != row["id"]] + [row]
        self.flush()
        status = row["status"] if row["status"] == "ok" else f"{row['status']}: {row.get('reason', '')}"
        shown = {k: row[k] for k in ("step_ms", "tokens_per_s", "mfu", "latency_ms", "ratio") if k in row}
        print(f"[{time.strftime('%H:%M:%S')}] {row['id']}: {status} {shown}", flush=True)
        return row

    def flush(self) -> None:
        self.out.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.out.with_suffix(self.out.suffix + ".tmp")
        tmp.write_text(json.dumps(self.doc, indent=1) + "\n")
        tmp.replace(self.out)
        if self.md is not None:
            write_markdown(self.md, self.doc)


def _fmt(value, digits: int = 1) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    return f"{value:,}" if isinstance(value, int) else str(value)


def _gib(n) -> str:
    return "" if n is None else f"{n / 2**30:.2f}"


def _size_label(r: dict, meta: dict) -> str:
    """The size's name, with the depth and frames where they differ from the named size's (the row's
    figures, else the run's sizes in ``meta``)."""
    base, run = SIZES.get(r["size"]), meta.get("sizes", {}).get(r["size"], {})
    values = {k: r.get(k, run.get(k)) for k in ("depth", "frames")}
    notes = [f"{values[k]} {word}" for k, word in (("depth", "blocks"), ("frames", "frames"))
             if base is not None and values[k] is not None and values[k] != getattr(base, k)]
    return r["size"] + (f" ({', '.join(notes)})" if notes else "")


def markdown(doc: dict) -> str:
    """The tables of docs/accelerator.md from the JSON document."""
    meta = doc["meta"]
    rows = [{**r, "size": _size_label(r, meta)} for r in doc["rows"]]
    out = [f"Device: {meta.get('device')}; jax {meta.get('jax')}, torch {meta.get('torch')}; peak bf16 "
           f"{meta.get('peak_tflops')} TFLOP/s (given); XLA flags: {meta.get('xla_flags', {}).get('used') or 'none'}; "
           f"{meta.get('started')}; `{meta.get('command')}`", ""]

    def status(r):
        return "" if r["status"] == "ok" else f"{r['status']}: {r.get('reason', '')}"

    jax_rows = [r for r in rows if r["section"] == "jax"]
    if jax_rows:
        out += ["### jaxstage train step", "",
                "| size | step | precision | attention | remat | batch | ms/step | tokens/s | GFLOP/step (analytic) "
                "| XLA / analytic | MFU % | memory GiB (compiled) | device peak GiB | compile s | cuDNN in HLO | status |",
                "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
        for r in jax_rows:
            ratio = r.get("flops_xla_over_analytic")
            out.append(
                f"| {r['size']} | {r['kind']} | {r['precision']} | {r['attention']} | {r['remat']} | {r.get('batch', '')} "
                f"| {_fmt(r.get('step_ms'), 2)} | {_fmt(r.get('tokens_per_s'), 0)} "
                f"| {_fmt(r['flops_analytic'] / 1e9 if r.get('flops_analytic') else None, 2)} "
                f"| {_fmt(ratio, 2)} | {_fmt(100 * r['mfu'] if r.get('mfu') is not None else None, 1)} "
                f"| {_gib(r.get('memory_bytes'))} | {_gib(r.get('device_peak_bytes'))} | {_fmt(r.get('compile_s'), 1)} "
                f"| {'' if 'cudnn_in_hlo' not in r else ('yes' if r['cudnn_in_hlo'] else 'no')} | {status(r)} |")
        out.append("")
    torch_rows = [r for r in rows if r["section"] == "torch"]
    if torch_rows:
        out += ["### stable-audio-tools 0.0.19 DiT (torch), timed interleaved with the matching jaxstage plain row", "",
                "| size | side | precision | batch | ms/step (median) | min-max | tokens/s | MFU % | first step / compile s "
                "| x jaxstage | status |", "|---|---|---|---|---|---|---|---|---|---|---|"]
        for r in torch_rows:
            mm = f"{r['step_ms_min']}-{r['step_ms_max']}" if "step_ms_min" in r else ""
            out.append(f"| {r['size']} | {r['side']} | {r.get('precision', '')} | {r.get('batch', '')} "
                       f"| {_fmt(r.get('step_ms'), 2)} | {mm} | {_fmt(r.get('tokens_per_s'), 0)} "
                       f"| {_fmt(100 * r['mfu'] if r.get('mfu') is not None else None, 1)} "
                       f"| {_fmt(r.get('first_step_s', r.get('compile_s')), 1)} | {_fmt(r.get('over_jax'), 2)} | {status(r)} |")
        out.append("")
    over = [r for r in rows if r["section"] == "overhead"]
    if over:
        out += ["### Regime overhead (full recipe, adaptive / static)", "",
                "| size | precision / attention / remat | batch | adaptive plain step ms | event step ms | static ms "
                "| ratio at cadence measured | cadence | ratio at the config's cadence (500) | status |",
                "|---|---|---|---|---|---|---|---|---|---|"]
        for r in over:
            out.append(f"| {r['size']} | {r.get('setting', '')} | {r.get('batch', '')} | {_fmt(r.get('adaptive_plain_ms'), 2)} "
                       f"| {_fmt(r.get('adaptive_event_ms'), 2)} | {_fmt(r.get('static_ms'), 2)} "
                       f"| {_fmt(r.get('ratio_measured'), 3)} | {r.get('cadence', '')} | {_fmt(r.get('ratio'), 3)} "
                       f"| {status(r)} |")
        out.append("")
    gen = [r for r in rows if r["section"] == "generation"]
    if gen:
        out += ["### Generation latency (8-step ping-pong, batch 1, no CFG)", "",
                "| size | what | precision / attention | audio s | latency ms (median) | min-max | compile s | status |",
                "|---|---|---|---|---|---|---|---|"]
        for r in gen:
            mm = f"{r['latency_ms_min']}-{r['latency_ms_max']}" if "latency_ms_min" in r else ""
            out.append(f"| {r['size']} | {r['what']} | {r.get('setting', '')} | {_fmt(r.get('audio_seconds'), 2)} "
                       f"| {_fmt(r.get('latency_ms'), 2)} | {mm} | {_fmt(r.get('compile_s'), 1)} | {status(r)} |")
        out.append("")
    return "\n".join(out)


def write_markdown(path: Path, doc: dict) -> None:
    """Replace the generated block of ``path`` (between the markers) with the tables; a file without
    the markers gets the block appended (a new file: only the block)."""
    block = f"{MD_BEGIN}\n{markdown(doc)}\n{MD_END}"
    text = path.read_text() if path.is_file() else ""
    if MD_BEGIN in text and MD_END in text:
        head, rest = text.split(MD_BEGIN, 1)
        text = head + block + rest.split(MD_END, 1)[1]
    else:
        text = (text.rstrip() + "\n\n" if text.strip() else "") + block + "\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


# ----------------------------------------------------------------------------------------- timing


def time_steps(run_step, steps: int) -> list[float]:
    """ms of each of ``steps`` blocking steps."""
    out = []
    for _ in range(steps):
        start = time.perf_counter()
        run_step()
        out.append((time.perf_counter() - start) * 1000)
    return out


def analyze(compiled) -> dict:
    """XLA's FLOPs, the executable's memory and whether it calls cuDNN attention (best effort)."""
    from jaxstage.models.attention import uses_cudnn

    info = {}
    try:
        cost = compiled.cost_analysis()
        cost = cost[0] if isinstance(cost, (list, tuple)) else cost
        flops = float(cost.get("flops", 0.0)) if cost else 0.0
        info["flops_xla"] = flops if flops > 0 else None
    except Exception as err:
        info["flops_xla_error"] = one_line(err)
    try:
        m = compiled.memory_analysis()
        info["memory_bytes"] = int(m.argument_size_in_bytes + m.output_size_in_bytes - m.alias_size_in_bytes
                                   + m.temp_size_in_bytes)
        info["temp_bytes"] = int(m.temp_size_in_bytes)
    except Exception as err:
        info["memory_error"] = one_line(err)
    try:
        info["cudnn_in_hlo"] = uses_cudnn(compiled.as_text())
    except Exception as err:
        info["hlo_error"] = one_line(err)
    return info


def device_peak() -> int | None:
    import jax

    try:
        stats = jax.devices()[0].memory_stats() or {}
    except Exception:
        return None
    return stats.get("peak_bytes_in_use")


def figures(size: Size, ms: list[float], peak_tflops: float, flops: float) -> dict:
    step_ms = statistics.median(ms)
    return {"step_ms": round(step_ms, 3), "step_ms_min": round(min(ms), 3), "step_ms_max": round(max(ms), 3),
            "steps": len(ms), "tokens_per_s": round(size.batch * size.frames / (step_ms / 1000), 1),
            "flops_analytic": flops, "mfu": round(flops / (step_ms / 1000) / (peak_tflops * 1e12), 5)}


# ----------------------------------------------------------------------------------------- jax: plain step


def synthetic_batch(size: Size, seed: int = 0) -> dict:
    import numpy as np

    rng = np.random.default_rng(seed)
    return {"x0": rng.standard_normal((size.batch, size.frames, size.io), np.float32),
            "cond": rng.standard_normal((size.batch, size.cond_tokens, size.cond_dim), np.float32)}


def build_plain_dit(size: Size, precision: str, attention: str, remat: str, seed: int = 0):
    """jaxstage's DiT at ``size`` (kernel resolved for this backend; raises AttentionUnavailable)."""
    import jax
    import jax.numpy as jnp
    from flax import nnx

    from jaxstage.models.attention import resolve
    from jaxstage.models.dit import DiffusionTransformer

    dtype = jnp.dtype(DTYPE_NAME[precision])
    impl = resolve(attention, platform=jax.default_backend(), dtype=dtype, head_dim=size.head_dim)
    return DiffusionTransformer(io_channels=size.io, embed_dim=size.width, depth=size.depth, num_heads=size.heads,
                                cond_token_dim=size.cond_dim, project_cond_tokens=size.project_cond,
                                qk_norm=size.qk_norm, ff_mult=size.ff_mult, remat=remat != "none",
                                dtype=dtype, attention=impl, rngs=nnx.Rngs(seed))


def prepare_plain(size: Size, precision: str, attention: str, remat: str, batch: dict, warmup: int):
    """The plain DiT step (noise, forward, rectified-flow MSE, backward, AdamW) jitted ahead of time, as
    bench/step.py's torch side-by-side; returns (Contender, info)."""
    import jax

    bench_step = _load_bench("step")
    adamw = bench_step.ADAMW
    model = build_plain_dit(size, precision, attention, remat)
    # jit boundary: bench/step.py's plain rectified-flow step (params and optimizer state donated)
    compiled, run, key, x0, cond, compile_s = bench_step.compile_rf_dit_step(model, batch, adamw)
    info = {"compile_s": compile_s, "params": sum(int(a.size) for a in jax.tree.leaves(run["params"])),
            **analyze(compiled)}

    def run_step() -> None:
        run["params"], run["opt_state"], run["loss"] = compiled(run["params"], run["opt_state"],
                                                                jax.random.fold_in(key, run["step"]), x0, cond)
        run["step"] += 1
        jax.block_until_ready((run["params"], run["loss"]))

    for _ in range(warmup):
        run_step()
    return bench_step.Contender(run_step, lambda: float(run["loss"]), info), info


# ----------------------------------------------------------------------------------------- jax: full recipe


@dataclass
class Fixtures:
    """Stand-ins the SAO configs point at: an autoencoder directory (random weights; its VAE kept for
    the decode latency) and, per size, a prepared directory holding only dataset.json and an empty
    shard (the benchmark never reads records)."""

    work: Path
    vae: object = None
    autoencoder: dict | None = None

    def autoencoder_dir(self, size: Size) -> Path:
        from flax import nnx

        from jaxstage.models.oobleck import OobleckVAE
        from jaxstage.tools.export.autoencoder import save_autoencoder

        self.autoencoder = self.autoencoder or {}
        if size.vae not in self.autoencoder:
            vae = OobleckVAE(vae_config(size), nnx.Rngs(0))
            out = self.work / f"autoencoder_{size.vae}"
            save_autoencoder(vae, out, 44100, source="bench/accelerator.py (random weights)")
            self.autoencoder[size.vae] = (out, vae)
        return self.autoencoder[size.vae][0]

    def vae_of(self, size: Size):
        self.autoencoder_dir(size)
        return self.autoencoder[size.vae][1]

    def prepared_dir(self, size: Size, cfg) -> Path:
        from jaxstage.data.records import DATASET_JSON, FORMAT_VERSION
        from jaxstage.tools.export.autoencoder import autoencoder_sha256

        out = self.work / f"{size.name}_prepared"
        if (out / DATASET_JSON).is_file():
            return out
        autoencoder = self.autoencoder_dir(size)
        hop = vae_config(size).hop
        n, sr = cfg.num_samples, cfg.data.sample_rate
        ssl_frames = max(_load_bench("sao_memory").hubert_frames(n, sr), 8)
        count = cfg.regime.monitor_size + 2
        features = {"audio": ([n], "float32"), "audio_mask": ([n], "bool"), "seconds_start": ([], "float32"),
                    "seconds_total": ([], "float32"), "text_emb": ([size.text_len, size.cond_dim], "float32"),
                    "text_mask": ([size.text_len], "bool"), "ssl": ([ssl_frames, size.ssl_dim], "float32"),
                    "latents": ([n // hop, size.io], "float32"), "latent_mask": ([n // hop], "bool"),
                    "caption": ([], "str"), "id": ([], "str")}
        meta = {"version": FORMAT_VERSION, "count": count, "sample_rate": sr, "num_samples": n,
                "shards": [{"file": "shard-00000.array_record", "count": count}],
                "features": {k: {"shape": s, "dtype": d} for k, (s, d) in features.items()},
                "encoders": {"text": {"model_type": "t5", "max_length": size.text_len, "dim": size.cond_dim,
                                      "stand_in": True},
                             "ssl": {"model_type": "hubert", "layers": [6, 7], "dim": size.ssl_dim, "stand_in": True},
                             "autoencoder": {"directory": str(autoencoder.resolve()),
                                             "sha256": autoencoder_sha256(autoencoder), "hop": hop,
                                             "latent_dim": size.io, "scale": 1.0, "latent": "mean"}},
                "skipped": [], "manifest": "bench/accelerator.py stand-in (shapes only; no records)"}
        out.mkdir(parents=True, exist_ok=True)
        (out / "shard-00000.array_record").write_bytes(b"")
        (out / DATASET_JSON).write_text(json.dumps(meta, indent=1))
        return out


def recipe_overrides(size: Size, precision: str, attention: str, remat: str, cadence: int,
                     static: bool = False) -> list[str]:
    """--set overrides of the size's SAO config: one device, this batch, precision, kernel, remat and
    event cadence (``static``: regime off, no alignment, fixed levels, no structure regularizer)."""
    sets = ["mesh.data=1", "mesh.fsdp=1", f"train.batch_size={size.batch}", f"precision.compute={DTYPE_NAME[precision]}",
            f"model.attention={attention}", f"model.remat={remat}", f"regime.every={cadence}", f"struct.every={cadence}"]
    sets.append(f"data.clip_seconds={size.frames * vae_config(size).hop / 44100!r}")  # size.frames latents
    sets.append(f"model.depth={size.depth}")  # the config's unless --depth
    if size.name == "tiny":  # SAO Small's config at the tiny widths, its VAE at hop 4
        sets += [f"model.embed_dim={size.width}", f"model.num_heads={size.heads}",
                 "regime.monitor_size=4", "guidance.hidden=64", "struct.num_groups=2",
                 "codec.stats_examples=2"]
    if static:
        sets += ["regime.mode=off", "guidance.lambda0=0.0", "timesteps.adaptive=false", "struct.enabled=false"]
    return sets


def prepare_full(size: Size, precision: str, attention: str, remat: str, fixtures: Fixtures, cadence: int,
                 warmup: int, static: bool = False):
    """jaxstage's own compiled train step of the size's SAO config on a synthetic device-resident batch of
    the prepared records' shapes; codec statistics and the monitor batch from synthetic latents.
    Returns (Contender, info, config)."""
    import jax
    import numpy as np

    from jaxstage import parallel
    from jaxstage.config import load_config
    from jaxstage.train.state import build_experiment, fit_codec_stats, init_state
    from jaxstage.train.step import compile_train_step
    from jaxstage.train.trainer import _monitor_of

    overrides = recipe_overrides(size, precision, attention, remat, cadence, static)
    cfg = load_config(ROOT / size.config, overrides)
    cfg = load_config(ROOT / size.config, overrides + [f"data.path={fixtures.prepared_dir(size, cfg)}",
                                                       f"codec.autoencoder={fixtures.autoencoder_dir(size)}"])
    exp = build_experiment(cfg)
    rng = np.random.default_rng(0)

    def synthetic(count: int) -> dict:
        out = {}
        for key, (shape, dtype) in exp.example_spec.items():
            if dtype == np.bool_:
                out[key] = np.ones((count, *shape), bool)
            elif key in ("seconds_start",):
                out[key] = np.zeros((count, *shape), dtype)
            elif key in ("seconds_total",):
                out[key] = np.full((count, *shape), cfg.num_samples / cfg.data.sample_rate, dtype)
            else:
                out[key] = rng.standard_normal((count, *shape)).astype(dtype)
        return out

    held_out = synthetic(max(cfg.regime.monitor_size, 1))
    stats = fit_codec_stats(exp, None, held_out["latents"][: cfg.codec.stats_examples])
    state = init_state(exp, stats, _monitor_of(exp, stats, held_out))
    step = compile_train_step(exp, state)
    batch = parallel.global_batch(synthetic(cfg.train.batch_size), exp.batch_sharding)
    run = {"state": state, "metrics": None}

    def run_step() -> None:
        run["state"], run["metrics"] = step(run["state"], batch)
        jax.block_until_ready(run["metrics"])

    info = {"compile_s": round(step.compile_seconds, 2), "overrides": overrides,
            "params": sum(int(a.size) for a in jax.tree.leaves(state.params)), **analyze(step.compiled)}
    for _ in range(warmup):
        run_step()
    bench_step = _load_bench("step")
    return bench_step.Contender(run_step, lambda: float(run["metrics"]["loss"]), info), info, cfg


# ----------------------------------------------------------------------------------------- torch


def prepare_torch(size: Size, batch: dict, *, compile: bool, bf16: bool, warmup: int):
    """stable-audio-tools' DiT trained with the plain step in torch (eager or torch.compile, bf16 autocast
    on CUDA), on the GPU when there is one. Returns (Contender, info)."""
    import torch

    from jaxstage.tools.export.sat_config import dit_config
    from jaxstage.tools.export.sat_reference import load_dit_class

    bench_step = _load_bench("step")
    adamw = bench_step.ADAMW
    device = "cuda" if torch.cuda.is_available() else "cpu"
    dims = {"io_channels": size.io, "input_concat_dim": 0, "cond_token_dim": size.cond_dim, "global_cond_dim": 0}
    kwargs = dit_config(dims, embed_dim=size.width, depth=size.depth, num_heads=size.heads,
                        project_cond_tokens=size.project_cond, global_cond_type="prepend",
                        qk_norm="ln" if size.qk_norm else "none", ff_mult=size.ff_mult)
    torch.manual_seed(0)
    model = load_dit_class()(diffusion_objective="rectified_flow", **kwargs).to(device).train()
    opt = torch.optim.AdamW(model.parameters(), lr=adamw["lr"], betas=(adamw["b1"], adamw["b2"]), eps=adamw["eps"],
                            weight_decay=adamw["weight_decay"])
    forward = torch.compile(model) if compile else model
    x0 = torch.from_numpy(batch["x0"]).transpose(1, 2).contiguous().to(device)  # channels-first
    cond = torch.from_numpy(batch["cond"]).to(device)
    last = {}

    def train_step() -> None:
        t = torch.rand(x0.shape[0], device=device)
        noise = torch.randn_like(x0)
        x_t = (1 - t[:, None, None]) * x0 + t[:, None, None] * noise
        opt.zero_grad(set_to_none=True)
        with torch.autocast(device_type=device, dtype=torch.bfloat16, enabled=bf16):
            out = forward(x_t, t, cross_attn_cond=cond)
        loss = ((out.float() - (noise - x0)) ** 2).mean()
        loss.backward()
        opt.step()
        last["loss"] = loss.item()  # synchronizes

    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    graphs_before = bench_step._dynamo_graphs(torch)
    start = time.perf_counter()
    train_step()
    info = {"first_step_s": round(time.perf_counter() - start, 2), "device": device,
            "params": sum(p.numel() for p in model.parameters())}
    for _ in range(warmup - 1 + (1 if compile else 0)):
        train_step()
    if compile and graphs_before is not None:
        info["graphs"] = bench_step._dynamo_graphs(torch) - graphs_before
    if device == "cuda":
        info["device_peak_bytes"] = int(torch.cuda.max_memory_allocated())
    holder = {"model": model, "opt": opt}
    contender = bench_step.Contender(train_step, lambda: last["loss"], info)
    contender.holder = holder  # freed with the contender
    return contender, info


# ----------------------------------------------------------------------------------------- generation


def generation_latency(size: Size, precision: str, attention: str, fixtures: Fixtures, runs: int) -> list[dict]:
    """ms of 8-step ping-pong at batch 1: the DiT alone, and DiT + Oobleck decode (one jitted function each)."""
    import jax
    import jax.numpy as jnp
    from flax import nnx

    from jaxstage.diffusion import samplers, schedules
    from jaxstage.diffusion.objectives import make_objective

    model = build_plain_dit(size, precision, attention, "none")
    graphdef, params = nnx.split(model)
    vae = fixtures.vae_of(size)
    vae_graph, vae_params = nnx.split(vae.decoder)
    objective = make_objective("rf")
    levels = schedules.for_objective(objective, 8)
    cond = jax.random.normal(jax.random.key(1), (1, size.cond_tokens, size.cond_dim), jnp.float32)
    hop = vae_config(size).hop
    def sample(params, cond, key):
        dit = nnx.merge(graphdef, params)

        def denoise(x, level):
            x_in, c_noise = objective.model_input(x, level)
            return objective.denoise(dit(x_in, c_noise, cross_tokens=cond).out, x, level)

        noise_key, sampler_key = jax.random.split(key)
        x_T = jax.random.normal(noise_key, (1, size.frames, size.io), jnp.float32)
        return samplers.pingpong(denoise, objective, levels, x_T, sampler_key)

    def decode(vae_params, latents):
        return nnx.merge(vae_graph, vae_params)(latents)  # [1, frames * hop, 2]

    rows, compiled = [], {}
    for what in ("dit", "dit+decode"):
        row = {"id": f"gen/{size.name}/{what}", "section": "generation", "size": size.name, "what": what,
               "setting": f"{precision} / {attention}", "audio_seconds": round(size.frames * hop / 44100, 3),
               "frames": size.frames}
        try:
            start = time.perf_counter()
            # jit boundaries: the whole 8-step sampler is one program, the decoder another (dispatched
            # back to back, blocking only on the audio); weights are arguments, not constants
            if what == "dit":
                compiled["dit"] = jax.jit(sample).lower(params, cond, jax.random.key(0)).compile()
                run = lambda key: compiled["dit"](params, cond, key)
            else:
                latents = compiled["dit"](params, cond, jax.random.key(0))
                compiled["decode"] = jax.jit(decode).lower(vae_params, latents).compile()
                run = lambda key: compiled["decode"](vae_params, compiled["dit"](params, cond, key))
            row["compile_s"] = round(time.perf_counter() - start, 2)
            jax.block_until_ready(run(jax.random.key(0)))
            ms = []
            for i in range(runs):
                start = time.perf_counter()
                jax.block_until_ready(run(jax.random.key(i + 1)))
                ms.append((time.perf_counter() - start) * 1000)
            row.update(status="ok", latency_ms=round(statistics.median(ms), 3), latency_ms_min=round(min(ms), 3),
                       latency_ms_max=round(max(ms), 3), runs=runs)
        except Exception as err:
            row.update(status="failed", reason=one_line(err))
        rows.append(row)
    return rows


# ----------------------------------------------------------------------------------------- tasks


def jax_row_id(size: str, kind: str, precision: str, attention: str, remat: str) -> str:
    return f"jax/{size}/{kind}/{precision}/{attention}/{remat}"


def jax_row(size: Size, kind: str, precision: str, attention: str, remat: str) -> dict:
    return {"id": jax_row_id(size.name, kind, precision, attention, remat), "section": "jax", "size": size.name,
            "kind": kind, "precision": precision, "attention": attention, "remat": remat, "batch": size.batch,
            "frames": size.frames, "depth": size.depth, "tokens_per_step": size.batch * size.frames}


def attention_problem(size: Size, precision: str, attention: str) -> str | None:
    """resolve()'s refusal for this kernel here, or None."""
    import jax
    import jax.numpy as jnp

    from jaxstage.models.attention import AttentionUnavailable, resolve

    try:
        resolve(attention, platform=jax.default_backend(), dtype=jnp.dtype(DTYPE_NAME[precision]), head_dim=size.head_dim)
    except AttentionUnavailable as err:
        return str(err)
    return None


class Bench:
    def __init__(self, args, results: Results, fixtures: Fixtures, on_gpu: bool):
        self.args, self.results, self.fixtures, self.on_gpu = args, results, fixtures, on_gpu
        self.start = T0
        self.done: set[str] = set()

    # -- helpers
    def over_budget(self) -> bool:
        return self.args.budget_s is not None and time.monotonic() - self.start > self.args.budget_s

    def budget_reason(self) -> str:
        return f"time budget spent (--budget-s {self.args.budget_s:g}; {time.monotonic() - self.start:.0f} s elapsed)"

    def flops(self, size: Size, kind: str) -> float:
        tokens = size.cond_tokens if kind == "plain" else None
        if kind == "full":  # the recipe's cross tokens: T5 tokens + one per number conditioner
            tokens = size.text_len + (1 if size.config.endswith("sao_small_finetune.py") else 2)
        return model_flops(size, cond_tokens=tokens)

    def record_jax(self, size: Size, combo, info: dict, ms: list[float], loss: float | None, extra=None) -> dict:
        row = jax_row(size, *combo)
        flops = self.flops(size, combo[0])
        row.update(status="ok", **figures(size, ms, self.args.peak_tflops, flops),
                   **{k: v for k, v in info.items() if k != "overrides"})
        if info.get("flops_xla"):
            row["flops_xla_over_analytic"] = round(info["flops_xla"] / flops, 3)
        if self.on_gpu:
            row["device_peak_bytes"] = device_peak()
        if loss is not None:
            row["loss"] = round(loss, 5) if math.isfinite(loss) else str(loss)
        row.update(extra or {})
        self.done.add(row["id"])
        return self.results.add(row)

    def skip(self, row: dict, status: str, reason: str) -> None:
        row.update(status=status, reason=reason)
        self.done.add(row["id"])
        self.results.add(row)

    def prepare(self, size: Size, combo, warmup: int, static: bool = False):
        kind, precision, attention, remat = combo
        if kind == "plain":
            return prepare_plain(size, precision, attention, remat, synthetic_batch(size), warmup)
        contender, info, _ = prepare_full(size, precision, attention, remat, self.fixtures, self.args.cadence, warmup,
                                          static)
        return contender, info

    # -- tasks
    def jax_task(self, size: Size, combo) -> None:
        row = jax_row(size, *combo)
        if row["id"] in self.done:
            return
        if self.over_budget():
            return self.skip(row, "skipped", self.budget_reason())
        try:
            contender, info = self.prepare(size, combo, self.args.warmup)
            ms = time_steps(contender.run_step, self.args.steps)
            self.record_jax(size, combo, info, ms, contender.loss())
        except Exception as err:
            self.skip(row, "failed", one_line(err))
        finally:
            contender = None
            gc.collect()

    def torch_task(self, size: Size) -> None:
        """torch eager + torch.compile, round-robin with the matching jaxstage plain row."""
        bench_step = _load_bench("step")
        precision, attention = ("bf16", "cudnn") if self.on_gpu else ("fp32", "xla")
        combo = ("plain", precision, attention, "none")
        jrow = jax_row(size, *combo)
        torch_precision = "bf16 autocast" if self.on_gpu else "fp32"
        rows = {name: {"id": f"torch/{size.name}/{name}", "section": "torch", "size": size.name, "side": name,
                       "precision": torch_precision, "batch": size.batch, "frames": size.frames}
                for name in ("torch_eager", "torch_compile")}
        rows["torch_bf16_autocast"] = {"id": f"torch/{size.name}/torch_bf16_autocast", "section": "torch",
                                       "size": size.name, "side": "torch_bf16_autocast", "batch": size.batch}
        if not self.on_gpu:
            self.skip(rows.pop("torch_bf16_autocast"), "skipped",
                      "no CUDA device: bf16 autocast and SDPA's flash kernel are GPU rows (CPU runs fp32)")
        else:
            rows.pop("torch_bf16_autocast")
        if self.over_budget():
            for r in rows.values():
                self.skip(r, "skipped", self.budget_reason())
            return
        contenders, infos = {}, {}
        try:
            contenders["jax"], infos["jax"] = self.prepare(size, combo, self.args.warmup)
        except Exception as err:
            self.skip(jrow, "failed", one_line(err))
        batch = synthetic_batch(size)
        for name, compile_ in (("torch_eager", False), ("torch_compile", True)):
            if compile_ and not self.args.torch_compile:
                self.skip(rows.pop(name), "skipped", "torch.compile off (CPU default; --torch-compile runs it)")
                continue
            try:
                contenders[name], infos[name] = prepare_torch(size, batch, compile=compile_, bf16=self.on_gpu,
                                                              warmup=self.args.warmup)
            except Exception as err:
                self.skip(rows.pop(name), "failed", one_line(err))
        if len(contenders) > 0:
            steps = {name: self.args.steps for name in contenders}
            timed = bench_step.time_interleaved(contenders, steps)
            # time_interleaved keeps medians; the per-step lists are re-derived from min/median/max only
            flops = self.flops(size, "plain")
            jax_ms = timed.get("jax", {}).get("step_ms")
            if "jax" in contenders:
                t = timed["jax"]
                if "step_ms" in t:
                    self.record_jax(size, combo, infos["jax"], [t["step_ms"]], t.get("loss"), {
                        "step_ms_min": t["step_ms_min"], "step_ms_max": t["step_ms_max"], "steps": t["steps"],
                        "timed_with": "torch (round-robin)"})
                else:
                    self.skip(jrow, "failed", t.get("failed", "?"))
            for name, row in rows.items():
                t = timed.get(name, {})
                if "step_ms" not in t:
                    self.skip(row, "failed", t.get("failed", "not run"))
                    continue
                row.update({**infos[name], **t, "status": "ok"})
                row.update(tokens_per_s=round(size.batch * size.frames / (t["step_ms"] / 1000), 1),
                           flops_analytic=flops, mfu=round(flops / (t["step_ms"] / 1000) / (self.args.peak_tflops * 1e12), 5),
                           over_jax=round(t["step_ms"] / jax_ms, 3) if jax_ms else None)
                self.results.add(row)
        contenders.clear()
        gc.collect()
        try:
            import torch

            if torch.cuda.is_available():
                torch.cuda.empty_cache()
        except ImportError:
            pass

    def overhead_task(self, size: Size) -> None:
        """Adaptive vs static full recipe in rounds of ``cadence`` steps (per-position medians over rounds).

        Interleaved (default): both variants in memory, their rounds alternating. ``--overhead-order aba``
        (machines with too little memory for two train states): adaptive, static, adaptive again, one
        state in memory at a time (the second adaptive compile is a cache hit with --compile-cache); the
        adaptive phases bracket the static one, so a drift of the machine's speed largely cancels."""
        precision, attention = ("bf16", "cudnn") if self.on_gpu else ("fp32", "xla")
        combo = ("full", precision, attention, "none")
        row = {"id": f"overhead/{size.name}", "section": "overhead", "size": size.name, "batch": size.batch,
               "frames": size.frames, "depth": size.depth, "setting": f"{precision} / {attention} / none", "cadence": self.args.cadence,
               "config_cadence": CONFIG_CADENCE, "order": self.args.overhead_order}
        if self.over_budget():
            return self.skip(row, "skipped", self.budget_reason())
        cadence, rounds = self.args.cadence, self.args.rounds
        seconds = {"adaptive": [], "static": []}
        infos, losses = {}, {}
        runners = {}
        try:
            if self.args.overhead_order == "interleaved":
                for name in ("adaptive", "static"):  # warm-up: one cadence, so rounds start aligned
                    runners[name], infos[name] = self.prepare(size, combo, cadence, static=name == "static")
                for r in range(rounds):
                    for name in (("adaptive", "static") if r % 2 == 0 else ("static", "adaptive")):
                        seconds[name].append(time_steps(runners[name].run_step, cadence))
                losses = {name: runner.loss() for name, runner in runners.items()}
            else:
                for name in ("adaptive", "static", "adaptive"):
                    runner, info = self.prepare(size, combo, cadence, static=name == "static")
                    infos.setdefault(name, info)
                    for _ in range(rounds):
                        seconds[name].append(time_steps(runner.run_step, cadence))
                    losses[name] = runner.loss()
                    runner = None
                    gc.collect()
            medians = {name: [statistics.median(col) for col in zip(*rs)] for name, rs in seconds.items()}
            event = medians["adaptive"][-1]  # new_step % cadence == 0 on the last step of each round
            plain = statistics.mean(medians["adaptive"][:-1])
            static_ms = statistics.mean(medians["static"])
            measured = statistics.mean(medians["adaptive"]) / static_ms
            at_config = (plain + (event - plain) / CONFIG_CADENCE) / static_ms
            self.record_jax(size, combo, infos["adaptive"], [x for rs in seconds["adaptive"] for x in rs[:-1]],
                            losses["adaptive"], {"timed_with": f"static ({self.args.overhead_order} rounds; event "
                                                               f"steps left out of the median)"})
            row.update(status="ok", adaptive_plain_ms=round(plain, 3), adaptive_event_ms=round(event, 3),
                       static_ms=round(static_ms, 3), ratio_measured=round(measured, 4), ratio=round(at_config, 4),
                       rounds=rounds, static_compile_s=infos["static"]["compile_s"],
                       adaptive_round_ms=[round(sum(rs), 1) for rs in seconds["adaptive"]],
                       static_round_ms=[round(sum(rs), 1) for rs in seconds["static"]])
            self.results.add(row)
        except Exception as err:
            self.skip(row, "failed", one_line(err))
            if jax_row_id(size.name, *combo) not in self.done:
                self.skip(jax_row(size, *combo), "failed", one_line(err))
        finally:
            runners.clear()
            gc.collect()

    def generation_task(self, size: Size) -> None:
        precision, attention = ("bf16", "cudnn") if self.on_gpu else ("fp32", "xla")
        if self.over_budget():
            for what in ("dit", "dit+decode"):
                self.skip({"id": f"gen/{size.name}/{what}", "section": "generation", "size": size.name, "what": what},
                          "skipped", self.budget_reason())
            return
        for row in generation_latency(size, precision, attention, self.fixtures, self.args.gen_runs):
            self.results.add(row)

    def plan(self, sizes: list[Size]) -> list:
        """(callable, args) in priority order, then every other grid row (skipped unless --full-grid)."""
        tasks, sections = [], self.args.sections.split(",")
        small = ("sao_small", "tiny")
        for size in sizes:  # the headline rows of every size first
            tasks.append((self.torch_task, (size,)) if "torch" in sections else None)
            tasks.append((self.overhead_task, (size,)) if "overhead" in sections and size.name in small else None)
            tasks.append((self.generation_task, (size,)) if "generation" in sections and size.name in small else None)
        for size in sizes:
            for combo in DEFAULT_PLAN.get(size.name, []) if "jax" in sections else []:
                tasks.append((self.jax_task, (size, combo)))
        return [t for t in tasks if t is not None]

    def run(self, sizes: list[Size]) -> None:
        for fn, fargs in self.plan(sizes):
            fn(*fargs)
        for size in sizes if "jax" in self.args.sections.split(",") else []:
            # the rest of the grid: run (--full-grid) or skipped with a reason
            for combo in [(k, p, a, r) for k in KINDS for p in PRECISIONS for a in ATTENTIONS for r in REMATS]:
                row = jax_row(size, *combo)
                if row["id"] in self.done:
                    continue
                problem = attention_problem(size, combo[1], combo[2])
                if problem:
                    self.skip(row, "skipped", problem)
                elif self.args.full_grid:
                    self.jax_task(size, combo)
                elif size.name == "tiny":
                    self.skip(row, "skipped", "tiny runs one row per option to stay within a test's time "
                                              "(--full-grid runs it)")
                else:
                    self.skip(row, "skipped", "not in the default 8-minute plan (--full-grid runs it)")
        if "sao" in [s.name for s in sizes] and "generation" in self.args.sections.split(","):
            for what in ("dit", "dit+decode"):
                self.skip({"id": f"gen/sao/{what}", "section": "generation", "size": "sao", "what": what}, "skipped",
                          "generation is measured at SAO Small's ~12 s shape (SAO 1.0's clip is 47.6 s)")
        if "sao" in [s.name for s in sizes] and "overhead" in self.args.sections.split(","):
            self.skip({"id": "overhead/sao", "section": "overhead", "size": "sao"}, "skipped",
                      "the overhead goal is set at SAO Small's size (the ratio is measured there)")


# ----------------------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--peak-tflops", type=float, default=None,
                        help="the device's dense bf16 peak in TFLOP/s (MFU's denominator; H100 SXM: 989)")
    parser.add_argument("--size", default=None, help="comma list of sao_small, sao (default both; --tiny: tiny)")
    parser.add_argument("--tiny", action="store_true", help="the tiny size on CPU (tests): every section, seconds")
    parser.add_argument("--batch", type=int, default=None, help="override the sizes' batch")
    parser.add_argument("--frames", type=int, default=None, help="override the sizes' latent frames per example")
    parser.add_argument("--depth", type=int, default=None, help="override the sizes' DiT depth (small machines)")
    parser.add_argument("--vae", choices=("sao", "tiny"), default=None,
                        help="the stand-in Oobleck's shape (default: SAO's; tiny for --tiny). The train step reads "
                             "prepared latents and never runs it; tiny saves its memory on small machines")
    parser.add_argument("--sections", default="torch,overhead,generation,jax",
                        help="comma list of the sections to run: torch, overhead, generation, jax (the grid)")
    parser.add_argument("--quick", action="store_true", help="fewer steps and runs, no torch.compile, SAO Small only")
    parser.add_argument("--full-grid", action="store_true", help="run every feasible grid row, not only the default plan")
    parser.add_argument("--out", type=Path, default=None, help=f"JSON (default {DEFAULT_OUT.relative_to(ROOT)})")
    parser.add_argument("--md", type=Path, default=None, help=f"markdown (default {DEFAULT_MD.relative_to(ROOT)})")
    parser.add_argument("--md-only", action="store_true", help="only redraw the markdown from --out")
    parser.add_argument("--steps", type=int, default=None, help="timed steps per row (GPU 10, tiny 3)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps after compile")
    parser.add_argument("--cadence", type=int, default=None, help="regime/structure event cadence while timing (GPU 10, tiny 4)")
    parser.add_argument("--rounds", type=int, default=None, help="overhead: interleaved rounds per variant (GPU 6, tiny 3)")
    parser.add_argument("--overhead-order", choices=("interleaved", "aba"), default="interleaved",
                        help="overhead: both variants in memory, rounds alternating; or adaptive, static, adaptive "
                             "with one train state in memory at a time (small machines)")
    parser.add_argument("--gen-runs", type=int, default=None, help="generation: timed runs (GPU 10, tiny 2)")
    parser.add_argument("--budget-s", type=float, default=None,
                        help="skip the remaining rows once this many seconds have passed (GPU default 360)")
    parser.add_argument("--torch-compile", action=argparse.BooleanOptionalAction, default=None,
                        help="the torch.compile row (default: on with CUDA, off on CPU)")
    parser.add_argument("--no-torch", action="store_true", help="skip the torch rows")
    parser.add_argument("--xla-flags", default="auto",
                        help="auto (GPU: launch/gpu.env if XLA accepts it; CPU: none) | none | default (the file's, "
                             "on any backend) | a flag list, given as --xla-flags='--xla_...=...'")
    parser.add_argument("--compile-cache", default=None, help="JAX persistent compilation cache folder (default: off)")
    parser.add_argument("--work", type=Path, default=None, help="folder for the stand-in fixtures (default: temporary)")
    args = parser.parse_args(argv)
    out = args.out or DEFAULT_OUT
    md = args.md or DEFAULT_MD
    if args.md_only:
        write_markdown(md, json.loads(out.read_text()))
        return 0
    if args.tiny:
        os.environ.setdefault("JAX_PLATFORMS", "cpu")
    os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")  # torch shares the GPU
    xla_flags = {"requested": args.xla_flags}
    if args.xla_flags != "none" and not (args.xla_flags == "auto" and args.tiny):
        flags = read_flags_file() if args.xla_flags in ("auto", "default") else args.xla_flags
        backend, why = probe_backend(flags)
        xla_flags.update(candidate=flags, accepted=backend is not None, **({"rejected_because": why} if why else {}))
        if backend is not None and (backend == "gpu" or args.xla_flags != "auto"):
            os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {flags}".strip()
            xla_flags["used"] = flags
    stubbed = stub_missing()

    import jax

    if args.compile_cache:
        jax.config.update("jax_compilation_cache_dir", args.compile_cache)
    on_gpu = jax.default_backend() == "gpu"
    if args.peak_tflops is None:
        if on_gpu:
            parser.error("--peak-tflops is required on a GPU (the device's dense bf16 peak, e.g. 989 for an H100 SXM)")
        args.peak_tflops = 1.0  # CPU: a nominal 1 TFLOP/s, so MFU is only a relative figure
    names = (args.size or ("tiny" if args.tiny else ("sao_small" if args.quick else "sao_small,sao"))).split(",")
    unknown = [n for n in names if n not in SIZES]
    if unknown:
        parser.error(f"--size: unknown {unknown}; choose from {list(SIZES)}")
    small = args.tiny or not on_gpu
    args.steps = args.steps or (3 if small else (5 if args.quick else 10))
    args.cadence = args.cadence or (4 if small else 10)
    args.rounds = args.rounds or (3 if small else (4 if args.quick else 6))
    args.gen_runs = args.gen_runs or (2 if small else 10)
    if args.budget_s is None and on_gpu:
        args.budget_s = 360.0  # + the row in flight and start-up: within ~8 minutes
    if args.torch_compile is None:
        args.torch_compile = on_gpu and not args.quick
    sizes = [replace(SIZES[n], **({"batch": args.batch} if args.batch else {}),
                     **({"frames": args.frames} if args.frames else {}),
                     **({"depth": args.depth} if args.depth else {}),
                     **({"vae": args.vae} if args.vae else {})) for n in names]
    try:
        import torch
        torch_version = torch.__version__
    except ImportError:
        torch_version = None
    meta = {"device": f"{jax.device_count()}x {jax.devices()[0].device_kind} ({jax.default_backend()})",
            "jax": jax.__version__, "torch": torch_version, "python": platform.python_version(),
            "peak_tflops": args.peak_tflops, "started": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
            "command": " ".join(["python", "bench/accelerator.py", *(argv if argv is not None else sys.argv[1:])]),
            "sizes": {s.name: asdict(s) for s in sizes}, "batch_override": args.batch,
            "frames_override": args.frames, "depth_override": args.depth, "vae_override": args.vae, "sections": args.sections, "steps": args.steps, "warmup": args.warmup,
            "cadence": args.cadence, "rounds": args.rounds, "budget_s": args.budget_s, "xla_flags": xla_flags,
            "stubbed_modules": stubbed, "cpu_threads": len(os.sched_getaffinity(0)),
            "flops_formula": inspect.cleandoc(model_flops.__doc__),
            "memory": "memory_bytes: compiled arguments + outputs - aliased + temporaries of the row's executable; "
                      "device_peak_bytes (GPU): memory_stats()['peak_bytes_in_use'], the process's running maximum"}
    results = Results(out, md, meta)
    results.flush()  # the metadata, before the first row
    with tempfile.TemporaryDirectory(prefix="accelerator_") as tmp:
        work = args.work or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        bench = Bench(args, results, Fixtures(work), on_gpu)
        if args.no_torch:
            bench.torch_task = lambda size: [bench.skip(
                {"id": f"torch/{size.name}/{side}", "section": "torch", "size": size.name, "side": side},
                "skipped", "--no-torch") for side in ("torch_eager", "torch_compile")]
        bench.run(sizes)
    results.doc["meta"]["wall_s"] = round(time.monotonic() - bench.start, 1)
    results.flush()
    print(markdown(results.doc))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Per-device memory of fine-tuning the exact Stable Audio Open 1.0 and SAO Small shapes on 8 devices
(FSDP), with and without remat (issue 20, acceptance 5).

    python bench/sao_memory.py                                   # both models x remat on/off, 1 clip per device
    python bench/sao_memory.py --models sao_small --remat on --per-device-batch 4

Each case is one `jaxstage aot-check --devices 8 --set mesh.data=1 --set mesh.fsdp=8` of
configs/sao_finetune.py or configs/sao_small_finetune.py, run in its own process (fake CPU devices
must be set before JAX starts). aot-check needs what the config points at, and no network or real
weights, so this script first builds stand-ins in a work folder (default: a temporary one):

- a jaxstage autoencoder directory with SAO's exact Oobleck VAE (channels 128, c_mults
  [1,2,4,8,16], strides [2,4,4,8,8], latent 64, stereo, SnakeBeta, no final tanh), random weights;
- per model, a prepared directory whose records have the shapes `jaxstage prepare --autoencoder
  --text-encoder T5 --ssl-encoder HuBERT` writes for that clip: latents [frames, 64] + latent_mask,
  text_emb [L, 768] + text_mask (L = 128 / 64), ssl [HuBERT frames, 768], seconds_start /
  seconds_total, audio + audio_mask; dataset.json records the autoencoder's SHA-256.

`train.init_from` stays as the config has it: aot-check compiles from abstract shapes and never
reads it. The results go to bench/results/sao_memory.json, rewritten after every finished case (an
interrupted run keeps what it measured). Figures are the XLA:CPU compiler's (see docs/scaling.md).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from jaxstage.config import Config, load_config  # noqa: E402

MODELS = {  # name -> (config file, T5 max_length of that model's prompt conditioner)
    "sao": ("configs/sao_finetune.py", 128),
    "sao_small": ("configs/sao_small_finetune.py", 64),
}
TEXT_DIM = 768  # T5-base hidden size
SSL_DIM = 768  # HuBERT-base hidden size
SSL_RATE, SSL_STRIDE, SSL_FIELD = 16000, 320, 400  # HuBERT's input rate, conv hop and receptive field
DEVICES = 8
DEFAULT_OUT = ROOT / "bench" / "results" / "sao_memory.json"


# ------------------------------------------------------------------------------------ fixtures


def hubert_frames(num_samples: int, sample_rate: int) -> int:
    """Frames HuBERT gives for a clip (what `prepare --ssl-encoder` stores): the clip resampled to
    16 kHz (librosa's length, ceil), then the conv front end (receptive field 400, hop 320)."""
    length = math.ceil(num_samples * SSL_RATE / sample_rate)
    return (length - SSL_FIELD) // SSL_STRIDE + 1


def write_autoencoder(out: Path, vae_cfg=None, sample_rate: int = 44100, seed: int = 0) -> Path:
    """A jaxstage autoencoder directory with random weights (default: SAO's exact VAE shape)."""
    from flax import nnx

    from jaxstage.models.oobleck import OobleckConfig, OobleckVAE
    from jaxstage.tools.export.autoencoder import save_autoencoder

    vae_cfg = OobleckConfig() if vae_cfg is None else vae_cfg  # its defaults are SAO's
    return save_autoencoder(OobleckVAE(vae_cfg, nnx.Rngs(seed)), out, sample_rate,
                            source="bench/sao_memory.py (random weights)")


def write_prepared(out: Path, cfg: Config, autoencoder: Path, text_len: int, count: int | None = None,
                   text_dim: int = TEXT_DIM, ssl_dim: int = SSL_DIM, seed: int = 0) -> Path:
    """A prepared directory for ``cfg`` (data.latents, precomputed text and SSL) with ``count`` records
    (default: the monitor's held-out ones plus 2 for training) of the shapes `jaxstage prepare` writes
    with T5-base and HuBERT-base (``text_dim`` / ``ssl_dim`` smaller for tests)."""
    from array_record.python.array_record_module import ArrayRecordWriter

    from jaxstage.data.records import DATASET_JSON, FORMAT_VERSION, encode_record
    from jaxstage.tools.export.autoencoder import autoencoder_sha256, oobleck_config

    sat = json.loads((autoencoder / "model_config.json").read_text())
    vae_cfg, _, _ = oobleck_config(sat, str(autoencoder))
    n, sr = cfg.num_samples, cfg.data.sample_rate
    if n % vae_cfg.hop:
        raise ValueError(f"clip of {n} samples is not a whole number of {vae_cfg.hop}-sample latents")
    frames, ssl_frames = n // vae_cfg.hop, hubert_frames(n, sr)
    count = cfg.regime.monitor_size + 2 if count is None else count
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    name = "shard-00000.array_record"
    writer = ArrayRecordWriter(str(out / name), "group_size:1")
    for i in range(count):
        example = {
            "audio": (0.1 * rng.standard_normal(n)).astype(np.float32), "audio_mask": np.ones(n, bool),
            "seconds_start": np.float32(0.0), "seconds_total": np.float32(n / sr),
            "text_emb": rng.standard_normal((text_len, text_dim)).astype(np.float32),
            "text_mask": np.arange(text_len) <= i % text_len,  # 1..L real tokens
            "ssl": rng.standard_normal((ssl_frames, ssl_dim)).astype(np.float32),
            "latents": rng.standard_normal((frames, vae_cfg.latent_dim)).astype(np.float32),
            "latent_mask": np.ones(frames, bool),
            "caption": f"stand-in clip {i}", "id": f"item-{i}",
        }
        writer.write(encode_record(example))
    writer.close()
    features = {k: ({"shape": [], "dtype": "str"} if isinstance(v, str)
                    else {"shape": list(np.shape(v)), "dtype": str(np.asarray(v).dtype)})
                for k, v in example.items()}
    meta = {
        "version": FORMAT_VERSION, "count": count, "sample_rate": sr, "num_samples": n,
        "shards": [{"file": name, "count": count}], "features": features,
        "encoders": {"text": {"model_type": "t5", "max_length": text_len, "dim": text_dim, "stand_in": True},
                     "ssl": {"model_type": "hubert", "layers": [6, 7], "dim": ssl_dim, "stand_in": True},
                     "autoencoder": {"directory": str(autoencoder.resolve()),
                                     "sha256": autoencoder_sha256(autoencoder), "hop": vae_cfg.hop,
                                     "latent_dim": vae_cfg.latent_dim, "scale": 1.0, "latent": "mean"}},
        "skipped": [], "manifest": "bench/sao_memory.py stand-in records",
    }
    (out / DATASET_JSON).write_text(json.dumps(meta, indent=1))
    return out


def fixture_overrides(prepared: Path, autoencoder: Path) -> list[str]:
    """The --set overrides pointing a SAO config at the stand-ins."""
    return [f"data.path={prepared}", f"codec.autoencoder={autoencoder}"]


# ------------------------------------------------------------------------------------ aot-check


def aot_check_command(config: str, overrides: list[str], out_json: Path, devices: int = DEVICES) -> list[str]:
    """argv of one `jaxstage aot-check` (run as `python -c` so the worktree's jaxstage is used)."""
    sets = [a for o in overrides for a in ("--set", o)]
    return [sys.executable, "-c", "import sys; from jaxstage.cli import main; sys.exit(main())", "aot-check",
            "--config", config, "--devices", str(devices), *sets, "--device-memory", "80GiB", "--out", str(out_json)]


def run_case(config: str, overrides: list[str], out_json: Path, timeout: float) -> tuple[int, float, str]:
    """(exit status, wall seconds, output) of one aot-check in a fresh process."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "JAX_PLATFORMS": "cpu"}
    env["XLA_FLAGS"] = " ".join(f for f in env.get("XLA_FLAGS", "").split()
                                if "xla_force_host_platform_device_count" not in f)  # aot-check sets its own
    start = time.perf_counter()
    proc = subprocess.run(aot_check_command(config, overrides, out_json), cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=timeout)
    return proc.returncode, time.perf_counter() - start, proc.stdout + proc.stderr


def write_results(path: Path, cases: list[dict]) -> None:
    import jax

    path.parent.mkdir(parents=True, exist_ok=True)
    doc = {"what": "jaxstage aot-check per-device memory, SAO 1.0 / SAO Small fine-tuning, 8 fake CPU devices, "
                   "mesh data=1 x fsdp=8 (XLA:CPU compiler's memory analysis, not a GPU's)",
           "jax": jax.__version__, "machine": f"{platform.machine()}, {os.cpu_count()} CPU cores", "cases": cases}
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(doc, indent=2))
    tmp.replace(path)


def table(cases: list[dict]) -> str:
    """The markdown table of docs/scaling.md from the measured cases (GiB per device)."""
    def gib(n: int) -> str:
        return f"{n / 2**30:.2f}"

    rows = ["| model | remat | global batch (per device) | parameters | arguments | of which params / EMA / optimizer "
            "| temporaries | peak (args + out − aliased + temp) | compile (s) |",
            "|---|---|---|---|---|---|---|---|---|"]
    for c in sorted(cases, key=lambda c: (list(MODELS).index(c["model"]), c["per_device_batch"], not c["remat"])):
        head = f"| {c['model']} | {'on' if c['remat'] else 'off'} | {c['per_device_batch'] * DEVICES} ({c['per_device_batch']})"
        if "report" not in c:
            rows.append(f"{head} | not measured: {c.get('error', '')} |||||||")
            continue
        r = c["report"]
        st = r["state"]
        rows.append(f"{head} | {r['parameters'] / 1e6:.1f}M | {gib(r['arguments'])} | {gib(st['params'])} / {gib(st['ema'])}"
                    f" / {gib(st['optimizer'])} | {gib(r['temporaries'])} | {gib(r['peak'])} | {r['compile_seconds']:.0f} |")
    return "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="sao,sao_small", help="comma list of " + ", ".join(MODELS))
    parser.add_argument("--remat", default="on,off", help="comma list of on, off")
    parser.add_argument("--per-device-batch", default="1", help="comma list of clips per device")
    parser.add_argument("--work", default=None, help="folder for the stand-ins (default: a temporary one)")
    parser.add_argument("--out", default=str(DEFAULT_OUT))
    parser.add_argument("--append", action="store_true", help="keep the cases already in --out (a case measured again is replaced)")
    parser.add_argument("--timeout", type=float, default=1200.0, help="seconds per case")
    parser.add_argument("--table", action="store_true", help="only print the markdown table of --out")
    args = parser.parse_args()
    out = Path(args.out)
    if args.table:
        print(table(json.loads(out.read_text())["cases"]))
        return
    cases = json.loads(out.read_text())["cases"] if args.append and out.is_file() else []
    with tempfile.TemporaryDirectory(prefix="sao_memory_") as tmp:
        work = Path(args.work or tmp)
        work.mkdir(parents=True, exist_ok=True)
        autoencoder = work / "autoencoder"
        if not (autoencoder / "model_config.json").is_file():
            write_autoencoder(autoencoder)
        for model in args.models.split(","):
            config, text_len = MODELS[model]
            cfg = load_config(ROOT / config)
            prepared = work / f"{model}_prepared"
            if not (prepared / "dataset.json").is_file():
                write_prepared(prepared, cfg, autoencoder, text_len)
            for remat in args.remat.split(","):
                for per_device in (int(b) for b in args.per_device_batch.split(",")):
                    overrides = ["mesh.data=1", f"mesh.fsdp={DEVICES}", f"train.batch_size={per_device * DEVICES}",
                                 f"model.remat={'true' if remat == 'on' else 'false'}"]
                    report_json = work / f"{model}_remat-{remat}_b{per_device}.json"
                    status, wall, text = run_case(config, overrides + fixture_overrides(prepared, autoencoder),
                                                  report_json, args.timeout)
                    print(text, flush=True)
                    case = {"model": model, "config": config, "remat": remat == "on", "per_device_batch": per_device,
                            "overrides": overrides, "exit_status": status, "wall_seconds": round(wall, 1)}
                    if report_json.is_file():
                        case["report"] = json.loads(report_json.read_text())
                    else:
                        case["error"] = text.strip().splitlines()[-1] if text.strip() else "no output"
                    key = (model, remat == "on", per_device)  # a rerun replaces the case's old entry
                    cases = [c for c in cases if (c["model"], c["remat"], c["per_device_batch"]) != key] + [case]
                    write_results(out, cases)


if __name__ == "__main__":
    main()

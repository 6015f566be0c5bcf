"""Import of the exact Stable Audio Open 1.0 and SAO Small shapes (issue 20, acceptance 1; and 3 at full size).

    python bench/sao_parity.py [--kinds sao1 small] [--work /tmp/sao_parity] [--no-export]

For each shape: a random t5-base-shaped T5 (12 layers; its weights are not part of a SAT checkpoint,
SAT loads T5 from the hub, here from this local directory), the SAT model built by stable-audio-tools
0.0.19's own `create_model_from_config` with seeded random weights (not perturbed: nothing is sampled),
saved as SAT ships it (`model.safetensors` + `model_config.json`), imported with `jaxstage import`
(`import_checkpoint`), then exported back and compared tensor by tensor with the source. Records keys
used / unused, parameter counts and wall times in bench/results/sao_parity.json, written after each
stage. CPU, fp32. SAO 1.0 needs ~20 GB of disk in --work and ~12 GB of RAM.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "tools" / "export"))

import sao_reference as ref  # noqa: E402

RESULTS = ROOT / "bench" / "results" / "sao_parity.json"


def _write(results: dict) -> None:
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")


def _groups(state: dict) -> dict[str, int]:
    """Parameter counts of the SAT state dict by part (DiT, conditioners, pretransform)."""
    parts = {"dit": "model.model.", "conditioners": "conditioner.", "pretransform": "pretransform."}
    return {name: int(sum(v.numel() for k, v in state.items() if k.startswith(prefix)))
            for name, prefix in parts.items()}


def compare_safetensors(source: Path, exported_dir: Path) -> dict:
    """Tensor-by-tensor comparison of ``source`` with the export's (possibly sharded) safetensors files."""
    from safetensors import safe_open

    theirs = {}
    for path in sorted(exported_dir.glob("model*.safetensors")):
        with safe_open(str(path), "numpy") as f:
            theirs.update({k: path for k in f.keys()})
    differing, missing = [], []
    with safe_open(str(source), "numpy") as src:
        keys = list(src.keys())
        for key in keys:
            if key not in theirs:
                missing.append(key)
                continue
            a = src.get_tensor(key)
            with safe_open(str(theirs[key]), "numpy") as f:
                b = f.get_tensor(key)
            if a.dtype != b.dtype or a.shape != b.shape or a.tobytes() != b.tobytes():
                differing.append(key)
    extra = sorted(set(theirs) - set(keys))
    return {"tensors": len(keys), "bit_exact": not (differing or missing or extra), "differing": differing[:20],
            "missing_in_export": missing[:20], "extra_in_export": extra[:20]}


def run_kind(kind: str, work: Path, results: dict, export: bool) -> None:
    import torch

    from jaxstage.tools.export.importer import import_checkpoint

    entry = results.setdefault(kind, {})
    base = work / kind
    shutil.rmtree(base, ignore_errors=True)
    config = ref.sao_model_config(kind)
    entry["config"] = {"sample_size": config["sample_size"], "latent_frames": ref.latent_frames(config),
                       "dit": config["model"]["diffusion"]["config"],
                       "objective": config["model"]["diffusion"]["diffusion_objective"]}

    start = time.perf_counter()
    t5_dir = ref.save_random_t5(base / "t5")
    entry["t5"] = "random t5-base shape: d_model 768, 12 layers, 12 heads, d_ff 3072, vocab 32128 (not in the checkpoint)"
    model = ref.build_sat_model(config, t5_dir, seed=0, perturb=False)
    state = model.state_dict()
    entry["sat_tensors"] = len(state)
    entry["sat_parameters"] = _groups(state)
    entry["seconds_build"] = round(time.perf_counter() - start, 1)
    start = time.perf_counter()
    src = ref.save_sat_checkpoint(model, config, base / "sat")
    del model, state
    entry["checkpoint_bytes"] = (src / "model.safetensors").stat().st_size
    entry["seconds_save"] = round(time.perf_counter() - start, 1)
    _write(results)
    print(f"{kind}: built and saved {entry['sat_tensors']} tensors {entry['sat_parameters']}", flush=True)

    start = time.perf_counter()
    report = import_checkpoint(src, base / "run", t5_dir=t5_dir)
    entry["seconds_import"] = round(time.perf_counter() - start, 1)
    entry["import"] = {k: report.get(k) for k in ("used_tensors", "unused_tensors", "fresh", "dit_parameters",
                                                   "not_imported_config", "codec_stats")}
    entry["every_key_used"] = report.get("unused_tensors") == [] and report.get("used_tensors") == entry["sat_tensors"]
    _write(results)
    print(f"{kind}: imported in {entry['seconds_import']} s: used {report.get('used_tensors')}, "
          f"unused {report.get('unused_tensors')}", flush=True)
    torch.cuda.empty_cache() if torch.cuda.is_available() else None

    if export:
        from jaxstage import cli

        start = time.perf_counter()
        rc = cli.main(["export", "--workdir", str(base / "run"), "--out", str(base / "export")])
        entry["seconds_export"] = round(time.perf_counter() - start, 1)
        entry["export_rc"] = rc
        entry["round_trip"] = compare_safetensors(src / "model.safetensors", base / "export")
        _write(results)
        print(f"{kind}: export -> bit exact: {entry['round_trip']['bit_exact']}", flush=True)
    shutil.rmtree(base, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kinds", nargs="+", default=["small", "sao1"], choices=["sao1", "small"])
    parser.add_argument("--work", default="/tmp/sao_parity")
    parser.add_argument("--no-export", action="store_true")
    args = parser.parse_args()
    results = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    for kind in args.kinds:
        run_kind(kind, Path(args.work), results, export=not args.no_export)


if __name__ == "__main__":
    main()

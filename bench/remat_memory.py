"""Per-device memory of the SAO-size train step under each rematerialization policy (issue 21), 8 fake CPU
devices, FSDP-8.

    python bench/remat_memory.py                                  # 3 models x 6 policies, 1 clip per device
    python bench/remat_memory.py --models sao_small --remat none,full --append
    python bench/remat_memory.py --table                          # the table of docs/scaling.md

Each case is one `jaxstage aot-check --devices 8 --set mesh.data=1 --set mesh.fsdp=8 --set model.remat=POLICY`
in its own process, with bench/sao_memory.py's helpers: configs/sao_1b_t2a.py needs nothing (mel codec,
synthetic data); configs/sao_finetune.py ("sao") and configs/sao_small_finetune.py ("sao_small") get the
stand-in autoencoder and prepared records sao_memory.py writes. `--remat` takes the names of
model.remat (none, full, dots, dots_no_batch, attention_out, offload; on / off mean full / none). The
results go to bench/results/remat_memory.json, rewritten after every finished case (an interrupted run
keeps what it measured; `--append` resumes, a case measured again is replaced). Figures are the XLA:CPU
compiler's (see docs/scaling.md).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from jaxstage.config import REMAT_POLICIES, load_config  # noqa: E402
from sao_memory import DEVICES, fixture_overrides, run_case, write_autoencoder, write_prepared  # noqa: E402

MODELS = {  # name -> (config file, T5 max_length of its prompt conditioner; None: needs no stand-ins)
    "sao_1b_t2a": ("configs/sao_1b_t2a.py", None),
    "sao": ("configs/sao_finetune.py", 128),
    "sao_small": ("configs/sao_small_finetune.py", 64),
}
ALIASES = {"on": "full", "off": "none"}
DEFAULT_OUT = ROOT / "bench" / "results" / "remat_memory.json"


def write_results(path: Path, cases: list[dict]) -> None:
    import platform

    import jax

    path.parent.mkdir(parents=True, exist_ok=True)
    doc = {"what": "jaxstage aot-check per-device memory by model.remat policy, 8 fake CPU devices, mesh data=1 x "
                   "fsdp=8 (XLA:CPU compiler's memory analysis, not a GPU's)",
           "jax": jax.__version__, "machine": f"{platform.machine()}, {os.cpu_count()} CPU cores", "cases": cases}
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(doc, indent=2))
    tmp.replace(path)


def policies(arg: str) -> list[str]:
    names = [ALIASES.get(p, p) for p in arg.split(",")]
    if bad := [p for p in names if p not in REMAT_POLICIES]:
        raise SystemExit(f"--remat: {', '.join(bad)} not among {', '.join(REMAT_POLICIES)} (or on, off)")
    return names


def table(cases: list[dict]) -> str:
    """policy x model: temporaries, peak per device (GiB) and compile seconds."""
    def gib(n: int) -> str:
        return f"{n / 2**30:.2f}"

    rows = ["| model.remat | " + " | ".join(f"{m} temporaries | {m} peak | {m} compile (s)"
                                           for m in MODELS if any(c["model"] == m for c in cases)) + " |"]
    models = [m for m in MODELS if any(c["model"] == m for c in cases)]
    rows.append("|---|" + "---|---|---|" * len(models))
    for policy in REMAT_POLICIES:
        cells = []
        for m in models:
            case = next((c for c in cases if c["model"] == m and c["remat"] == policy), None)
            if case is None:
                cells += ["not measured", "", ""]
            elif "report" not in case:
                cells += [f"failed: {case.get('error', '')}", "", ""]
            else:
                r = case["report"]
                cells += [gib(r["temporaries"]), gib(r["peak"]), f"{r['compile_seconds']:.0f}"]
        rows.append(f"| {policy} | " + " | ".join(cells) + " |")
    return "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="sao_1b_t2a,sao_small,sao", help="comma list of " + ", ".join(MODELS))
    parser.add_argument("--remat", default=",".join(REMAT_POLICIES),
                        help="comma list of " + ", ".join(REMAT_POLICIES) + " (on, off: full, none)")
    parser.add_argument("--per-device-batch", type=int, default=1, help="clips per device")
    parser.add_argument("--work", default=None, help="folder for the stand-ins (default: a temporary one)")
    parser.add_argument("--out", default=str(DEFAULT_OUT))
    parser.add_argument("--append", action="store_true", help="keep the cases already in --out")
    parser.add_argument("--timeout", type=float, default=1200.0, help="seconds per case")
    parser.add_argument("--table", action="store_true", help="only print the markdown table of --out")
    args = parser.parse_args()
    out = Path(args.out)
    if args.table:
        print(table(json.loads(out.read_text())["cases"]))
        return
    wanted = policies(args.remat)
    cases = json.loads(out.read_text())["cases"] if args.append and out.is_file() else []
    with tempfile.TemporaryDirectory(prefix="remat_memory_") as tmp:
        work = Path(args.work or tmp)
        work.mkdir(parents=True, exist_ok=True)
        for model in args.models.split(","):
            config, text_len = MODELS[model]
            extra = []
            if text_len is not None:  # the SAO fine-tuning configs read an autoencoder and prepared records
                autoencoder = work / "autoencoder"
                if not (autoencoder / "model_config.json").is_file():
                    write_autoencoder(autoencoder)
                prepared = work / f"{model}_prepared"
                if not (prepared / "dataset.json").is_file():
                    write_prepared(prepared, load_config(ROOT / config), autoencoder, text_len)
                extra = fixture_overrides(prepared, autoencoder)
            for policy in wanted:
                b = args.per_device_batch
                overrides = ["mesh.data=1", f"mesh.fsdp={DEVICES}", f"train.batch_size={b * DEVICES}",
                             f"model.remat={policy}"]
                report_json = work / f"{model}_{policy}_b{b}.json"
                try:
                    status, wall, text = run_case(config, overrides + extra, report_json, args.timeout)
                except subprocess.TimeoutExpired:
                    status, wall, text = -1, args.timeout, f"timed out after {args.timeout:.0f} s"
                print(f"== {model} model.remat={policy}\n{text}", flush=True)
                case = {"model": model, "config": config, "remat": policy, "per_device_batch": b,
                        "overrides": overrides, "exit_status": status, "wall_seconds": round(wall, 1)}
                if report_json.is_file():
                    case["report"] = json.loads(report_json.read_text())
                else:
                    case["error"] = text.strip().splitlines()[-1] if text.strip() else "no output"
                key = (model, policy, b)
                cases = [c for c in cases if (c["model"], c["remat"], c["per_device_batch"]) != key] + [case]
                write_results(out, cases)  # after every case: an interrupted run keeps what it measured


if __name__ == "__main__":
    main()

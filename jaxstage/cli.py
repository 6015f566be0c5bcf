"""The ``jaxstage`` command line: the only argv parser in the project.

    jaxstage train  [--config FILE] [--workdir DIR] [--set key=value ...] [--coordinator H:P --num-processes N --process-id I]
                    [--heartbeat-timeout S]          (task=autoencoder configs, e.g. configs/synth_oobleck.py: the VAE trainer)
    jaxstage sample --workdir DIR --prompt TEXT --out FILE.wav [--sampler NAME] [--steps N] [--cfg S] [--seed K]
                    [--seconds-start S] [--seconds-total S]
    jaxstage sample --workdir DIR --input LOW.wav|DIR --out HIGH.wav|DIR [--cutoff HZ] [--no-replace-low-band]
    jaxstage report --workdir DIR [--out FILE.png]
    jaxstage prepare --manifest FILE --out DIR [--kind K] [--audio-dir DIR] [--sample-rate HZ]
                     [--clip-seconds S] [--max-seconds S] [--text-encoder DIR] [--ssl-encoder DIR --ssl-layers 6,7] [--autoencoder AE_DIR]
    jaxstage eval   --task sr --ref DIR --est DIR --input-sr HZ [--out FILE.json] [--allow-missing]
    jaxstage eval   --task sr --workdir DIR [--n N] [--sampler NAME] [--steps N] [--out FILE.json]
    jaxstage eval   --task tta --workdir DIR [--prompts FILE] [--n N] [--ast DIR] [--clap DIR] [--out FILE.json]
    jaxstage export --workdir DIR --out OUT [--step N] [--ema] [--dtype fp32|bf16|fp16] [--max-shard-size 5GB]
    jaxstage import --src DIR|FILE --out WORKDIR [--config model_config.json] [--t5 T5_DIR] [--set key=value ...]
    jaxstage posttrain --config configs/synth_t2a_arc.py --init-from RUN_DIR [--workdir DIR] [--set key=value ...]
                       [--coordinator H:P --num-processes N --process-id I] [--heartbeat-timeout S]
    jaxstage aot-check [--config FILE] [--set key=value ...] [--devices N] [--device-memory 80GiB] [--out FILE.json]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

SAMPLER_CHOICES = ("euler", "heun", "dpmpp_2m", "pingpong")
GUIDANCE_CHOICES = ("cfg", "rescale", "apg")  # jaxstage.diffusion.guidance_rules.KINDS (not imported: no jax here)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="jaxstage", description="Stage-adaptive audio diffusion in JAX.")
    sub = parser.add_subparsers(dest="command", required=True)

    train = sub.add_parser("train", help="train a model (default: the offline synthetic text-to-audio config)")
    train.add_argument("--config", default=None, help="experiment file with get_config() (default configs/synth_t2a.py)")
    add_run_flags(train, set_example="model.depth=4")

    sample = sub.add_parser("sample", help="generate audio from a trained run (text-to-audio or super-resolution)")
    sample.add_argument("--workdir", required=True, help="run directory with config.json and checkpoints/")
    sample.add_argument("--prompt", action="append", default=None, help="text prompt (repeatable; task=t2a runs)")
    sample.add_argument("--input", default=None,
                        help="low-band audio file or folder to super-resolve (task=sr runs); any length")
    sample.add_argument("--out", required=True,
                        help="output WAV (numbered _0, _1, ... for several prompts), or a folder for a folder --input")
    sample.add_argument("--cutoff", type=float, default=None, metavar="HZ",
                        help="bandwidth of the input (default: its Nyquist when its rate is below the model's)")
    sample.add_argument("--replace-low-band", action=argparse.BooleanOptionalAction, default=None,
                        help="put the input's own band below the cutoff back into the output (default: sr.replace_low_band)")
    sample.add_argument("--sampler", choices=SAMPLER_CHOICES, default=None)
    sample.add_argument("--steps", type=int, default=None)
    sample.add_argument("--cfg", type=float, default=None, help="classifier-free guidance scale (task=t2a)")
    sample.add_argument("--seconds-start", type=float, default=None, metavar="S",
                        help="timing condition of runs with a seconds_start conditioner (default 0)")
    sample.add_argument("--seconds-total", type=float, default=None, metavar="S",
                        help="timing condition of runs with a seconds_total conditioner (default the clip length)")
    add_guidance_flags(sample)
    sample.add_argument("--seed", type=int, default=0)
    sample.add_argument("--step", type=int, default=None, help="checkpoint step (default: newest)")
    sample.add_argument("--no-ema", action="store_true", help="use raw instead of EMA weights")
    sample.add_argument("--raw-levels", action="store_true",
                        help="write the model's levels as they are (16-bit PCM clips them above full scale; "
                             "default: a clip peaking above full scale is scaled to sample.peak_level)")

    report = sub.add_parser("report", help="draw a run's regime and losses into report.png")
    report.add_argument("--workdir", required=True)
    report.add_argument("--out", default=None, help="output PNG (default WORKDIR/report.png)")

    prep = sub.add_parser("prepare", help="turn a manifest of audio + captions into a prepared dataset folder")
    prep.add_argument("--manifest", required=True, help="AudioCaps/Clotho/generic CSV, JSONL, or a folder of audio")
    prep.add_argument("--out", required=True, help="output folder (re-run with the same arguments to resume)")
    prep.add_argument("--kind", choices=("auto", "audiocaps", "clotho", "csv", "jsonl", "folder", "vctk_train",
                                         "vctk_test"), default="auto",
                      help="manifest kind; vctk_train/vctk_test: --manifest is the VCTK 0.92 root (standard SR split)")
    prep.add_argument("--audio-dir", default=None, help="where the audio lives (default: the manifest's folder)")
    prep.add_argument("--sample-rate", type=int, default=16000)
    prep.add_argument("--clip-seconds", type=float, default=10.0, help="crop or pad every clip to this length")
    prep.add_argument("--min-seconds", type=float, default=0.5, help="skip files shorter than this")
    prep.add_argument("--max-seconds", type=float, default=None, metavar="S",
                      help="store up to S s of each file (> --clip-seconds): training draws a random clip-length "
                           "crop per epoch, as stable-audio-tools does (seconds_start = the crop's offset)")
    prep.add_argument("--text-encoder", default=None, metavar="MODEL_DIR", help="local HF text encoder: a T5 runs in JAX, others (CLAP, ...) in PyTorch")
    prep.add_argument("--text-max-length", type=int, default=64)
    prep.add_argument("--ssl-encoder", default=None, metavar="MODEL_DIR", help="local HF audio encoder (HuBERT, ...)")
    prep.add_argument("--ssl-layers", default="6,7", help="hidden-state layers to average, e.g. 6,7")
    prep.add_argument("--autoencoder", default=None, metavar="AE_DIR",
                      help="a jaxstage autoencoder directory: also store each clip's latents (train with "
                           "codec.kind=oobleck, data.latents=true; docs/latent.md)")
    prep.add_argument("--shard-size", type=int, default=256)
    prep.add_argument("--batch-size", type=int, default=16, help="items per encoder batch")

    ev = sub.add_parser("eval", help="score generated audio files against references")
    ev.add_argument("--task", required=True, choices=("sr", "tta"),
                    help="sr: super-resolution (LSD, LSD-HF, LSD-LF, SI-SDR); tta: text-to-audio (attribute "
                         "accuracy, FD-spectral; with --ast/--clap: FD, KL both ways, IS, CLAP score)")
    ev.add_argument("--ref", default=None, help="folder of reference (full-band) audio")
    ev.add_argument("--est", default=None, help="folder of estimates, paired with --ref by relative path/stem")
    ev.add_argument("--workdir", default=None,
                    help="instead of --ref/--est: super-resolve the SR run's held-out clips and score them "
                         "(output, output with low-band replacement, unprocessed input) into WORKDIR/sr_eval.json")
    ev.add_argument("--n", type=int, default=None,
                    help="with --workdir: held-out clips (sr) or prompts (tta) (default sample.final_eval_prompts)")
    ev.add_argument("--prompts", default=None, help="tta: a UTF-8 file of prompts, one per line (no references)")
    ev.add_argument("--ast", default=None, metavar="MODEL_DIR", help="tta: local AST AudioSet classifier (FD, KL, IS)")
    ev.add_argument("--clap", default=None, metavar="MODEL_DIR", help="tta: local CLAP model (CLAP score, FD)")
    ev.add_argument("--cfg", type=float, default=None, help="tta: classifier-free guidance scale (default the run's)")
    add_guidance_flags(ev, "tta: ")
    ev.add_argument("--seed", type=int, default=0)
    ev.add_argument("--sampler", choices=SAMPLER_CHOICES, default=None, help="with --workdir (default: the run's)")
    ev.add_argument("--steps", type=int, default=None, help="with --workdir: sampler steps (default: the run's)")
    ev.add_argument("--step", type=int, default=None, help="with --workdir: checkpoint step (default: newest)")
    ev.add_argument("--input-sr", type=int, default=None, metavar="HZ",
                    help="sample rate of the band-limited model input (required for sr: sets the LSD-HF/LF split)")
    ev.add_argument("--out", default=None, help="output JSON (default EST/sr_eval.json)")
    ev.add_argument("--allow-missing", action="store_true",
                    help="skip references without an estimate (listed in the JSON) instead of failing")
    exp = sub.add_parser("export", help="write a run's DiT as a stable-audio-tools checkpoint (safetensors + model_config.json)")
    exp.add_argument("--workdir", required=True, help="run directory with config.json and checkpoints/")
    exp.add_argument("--out", required=True, help="output folder (model.safetensors or shards + index, model_config.json)")
    exp.add_argument("--step", type=int, default=None, help="checkpoint step (default: newest)")
    exp.add_argument("--ema", action="store_true", help="export the EMA weights (default: the raw weights)")
    exp.add_argument("--dtype", choices=("fp32", "bf16", "fp16"), default="fp32", help="parameter dtype (buffers stay fp32)")
    exp.add_argument("--max-shard-size", default="5GB", metavar="SIZE",
                     help="larger exports are split into shards with model.safetensors.index.json (e.g. 500MB, 5GB)")

    imp = sub.add_parser("import", help="turn a stable-audio-tools DiT checkpoint into a jaxstage run directory")
    imp.add_argument("--src", required=True, help="folder with model_config.json + model.safetensors / shards / .ckpt, "
                                                  "or a weights file")
    imp.add_argument("--out", required=True, help="new run directory (config.json, checkpoints/0, import.json)")
    imp.add_argument("--config", default=None, help="the model_config.json (default: beside the weights)")
    imp.add_argument("--t5", default=None, metavar="T5_DIR",
                     help="a local transformers T5 directory: the text encoder of a model with a t5 conditioner "
                          "(Stable Audio Open: t5-base), which stable-audio-tools checkpoints do not hold")
    imp.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                     help="override a field of the derived jaxstage config, e.g. --set codec.n_mels=64 (repeatable)")
    for name, what in (("import-autoencoder", "a stable-audio-tools Oobleck autoencoder (or the autoencoder of a "
                                              "diffusion checkpoint) into a jaxstage autoencoder directory"),
                       ("export-autoencoder", "a jaxstage autoencoder directory (or an autoencoder training run's "
                                              "EMA VAE) as a stable-audio-tools one")):
        ae = sub.add_parser(name, help=f"write {what} (docs/latent.md)")
        ae.add_argument("--src", required=True, help="folder with model_config.json + weights, or a weights file"
                                                     + (", or an autoencoder run directory" if name[0] == "e" else ""))
        ae.add_argument("--out", required=name[0] == "i",
                        help="output folder (model_config.json, model.safetensors)"
                             + ("; default for a run directory: RUN_DIR/autoencoder" if name[0] == "e" else ""))
        ae.add_argument("--config", default=None, help="the model_config.json (default: beside the weights)")
        if name[0] == "e":
            ae.add_argument("--step", type=int, default=None, help="run directory: checkpoint step (default: newest)")
    post = sub.add_parser("posttrain", help="ARC post-training: turn a pretrained rectified-flow run into a "
                                            "few-step sampler (docs/arc.md)")
    post.add_argument("--config", default=None, help="experiment file (e.g. configs/synth_t2a_arc.py)")
    post.add_argument("--init-from", default=None, metavar="RUN_DIR",
                      help="the pretrained run (default: the config's arc.init_from)")
    add_run_flags(post, set_example="arc.disc_depth=2")

    aot = sub.add_parser("aot-check", help="compile the train step for a mesh and model size without running it; "
                                           "print the memory each device needs")
    aot.add_argument("--config", default=None, help="experiment file with get_config() (default configs/synth_t2a.py)")
    aot.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                     help="override one config field, e.g. --set mesh.fsdp=8 (repeatable)")
    aot.add_argument("--devices", type=int, default=None,
                     help="compile for this many fake CPU devices (plan a pod from a laptop); default: this "
                          "machine's devices")
    aot.add_argument("--device-memory", default=None, metavar="SIZE",
                     help="memory of one target device, e.g. 80GiB (H100), 141GB (H200), 16GiB (TPU v5e): "
                          "exit status 3 when the step does not fit")
    aot.add_argument("--out", default=None, help="also write the report as JSON")
    return parser


def add_run_flags(parser: argparse.ArgumentParser, set_example: str) -> None:
    """The flags `train` and `posttrain` share: run directory, overrides, resuming, multi-process start-up."""
    parser.add_argument("--workdir", default=None, help="run directory (default: the config's train.workdir)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help=f"override one config field, e.g. --set {set_example} (repeatable)")
    parser.add_argument("--resume-step", type=int, default=None, metavar="N",
                        help="resume from the finished checkpoint at step N instead of the newest (e.g. when the "
                             "newest is damaged); = --set train.resume_step=N")
    parser.add_argument("--coordinator", default=None, metavar="HOST:PORT",
                        help="multi-process run: process 0's address (with --num-processes/--process-id; or "
                             "JAXSTAGE_COORDINATOR etc.; SLURM and TPU VM slices are detected)")
    parser.add_argument("--num-processes", type=int, default=None)
    parser.add_argument("--process-id", type=int, default=None)
    parser.add_argument("--heartbeat-timeout", type=int, default=100, metavar="SECONDS",
                        help="multi-process run: a process silent this long counts as dead and the others "
                             "stop with an error (default 100)")


def add_guidance_flags(parser: argparse.ArgumentParser, note: str = "") -> None:
    """``--guidance`` and its options: override the run's sample.guidance / cfg_rescale / apg_* for one call."""
    parser.add_argument("--guidance", choices=GUIDANCE_CHOICES, default=None,
                        help=f"{note}how the guided prediction is formed: plain CFG, CFG rescale or adaptive "
                             "projected guidance (default the run's sample.guidance; docs/guidance.md)")
    parser.add_argument("--cfg-rescale", type=float, default=None, metavar="PHI",
                        help=f"{note}with --guidance rescale: φ in [0, 1] (default the run's sample.cfg_rescale)")
    parser.add_argument("--apg-eta", type=float, default=None, metavar="ETA",
                        help=f"{note}with --guidance apg: weight of the parallel component, >= 0 (default 0)")
    parser.add_argument("--apg-norm-threshold", type=float, default=None, metavar="R",
                        help=f"{note}with --guidance apg: cap on the per-example norm of D_c − D_u (0 = none)")


GUIDANCE_FLAGS = ("guidance", "cfg_rescale", "apg_eta", "apg_norm_threshold")


def with_guidance_flags(args: argparse.Namespace, cfg):
    """The run's config with the guidance flags given applied (validated; unchanged when none is given)."""
    given = {k: getattr(args, k) for k in GUIDANCE_FLAGS}
    if all(v is None for v in given.values()):
        return cfg
    from jaxstage.config import with_guidance

    return with_guidance(cfg, **given)


def run_joined(args: argparse.Namespace, workdir: Path, run):
    """Join the other processes of a multi-process run (if any: flags, env, SLURM, TPU slice), then
    ``run()``. A failure in a multi-process run is one line naming the newest finished checkpoint,
    and the process exits at once: JAX's shutdown barrier at interpreter exit would wait for a dead
    peer."""
    from jaxstage import distributed

    if args.heartbeat_timeout < 1:
        raise ValueError(f"--heartbeat-timeout={args.heartbeat_timeout} must be >= 1 second")
    spec = distributed.detect(os.environ, coordinator=args.coordinator, num_processes=args.num_processes,
                              process_id=args.process_id)
    distributed.initialize(spec, heartbeat_timeout_seconds=args.heartbeat_timeout)
    try:
        return run()
    except Exception as err:
        if spec is None:
            raise
        print(f"jaxstage {args.command}: error: {distributed.failure_message(err, workdir / 'checkpoints')}",
              file=sys.stderr, flush=True)
        sys.stdout.flush()
        os._exit(1)


def parse_size(text: str, flag: str = "--max-shard-size") -> int:
    """'500MB', '5GB', '80GiB', '1024' (bytes) -> bytes; a bad size is a one-line error naming ``flag``."""
    units = {"": 1, "B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12,
             "KIB": 2**10, "MIB": 2**20, "GIB": 2**30, "TIB": 2**40}
    s = text.strip().upper()
    number = s.rstrip("KMGTIB")
    try:
        value = float(number) * units[s[len(number):]]
    except (ValueError, KeyError):
        raise ValueError(f"{flag} {text!r}: expected a size like 500MB, 5GB or 80GiB") from None
    if value < 1:
        raise ValueError(f"{flag} {text!r} must be at least one byte")
    return int(value)


def cmd_train(args: argparse.Namespace) -> int:
    """`train` and `posttrain`: the config file, ``--set`` overrides and ``--resume-step``, then the
    trainer, in every process of a multi-process run."""
    from jaxstage.config import load_config

    resume = [] if args.resume_step is None else [f"train.resume_step={args.resume_step}"]
    cfg = load_config(args.config, args.overrides + resume)

    def run():
        if args.command == "posttrain":
            from jaxstage.posttrain.trainer import posttrain

            return posttrain(cfg, args.workdir, init_from=args.init_from)
        if cfg.task == "autoencoder":
            from jaxstage.autoencoder.trainer import train_autoencoder

            return train_autoencoder(cfg, args.workdir)
        from jaxstage.train.trainer import train

        return train(cfg, args.workdir)

    result = run_joined(args, Path(args.workdir or cfg.train.workdir), run)
    if not result.stopped_by:
        steps = "post-training steps" if args.command == "posttrain" else "steps"
        print(f"done: {result.final_step} {steps} in {result.workdir}", file=sys.stderr)
    return 0


def cmd_aot_check(args: argparse.Namespace) -> int:
    from jaxstage.config import load_config

    cfg = load_config(args.config, args.overrides)
    limit = parse_size(args.device_memory, "--device-memory") if args.device_memory else None
    if args.devices is not None:
        if args.devices < 1:
            raise ValueError(f"--devices={args.devices} must be >= 1")
        # before JAX starts: N fake CPU devices stand in for the target's accelerators, and the CPU
        # compiler keeps the optimization barriers of jax.checkpoint (else model.remat saves nothing)
        from jaxstage.tools.aot_check import CPU_KEEP_REMAT_FLAG

        os.environ["JAX_PLATFORMS"] = "cpu"
        os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + f" {CPU_KEEP_REMAT_FLAG}"
                                   f" --xla_force_host_platform_device_count={args.devices}").strip()
    import jax

    from jaxstage.tools.aot_check import check_memory

    if args.devices is not None and (jax.device_count() != args.devices or jax.devices()[0].platform != "cpu"):
        raise ValueError(f"--devices={args.devices}: JAX had already started in this process with "
                         f"{jax.device_count()} {jax.devices()[0].platform} device(s); run jaxstage aot-check on its own")

    report = check_memory(cfg, device_memory=limit)
    for line in report.lines():
        print(line)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(report.to_json(), indent=2))
        print(f"wrote {args.out}", file=sys.stderr)
    return 3 if report.fits is False else 0


def cmd_export(args: argparse.Namespace) -> int:
    from jaxstage.tools.export.exporter import export_run

    result = export_run(args.workdir, args.out, step=args.step, ema=args.ema, dtype=args.dtype,
                        max_shard_bytes=parse_size(args.max_shard_size))
    print(f"exported step {result.step} ({'EMA' if args.ema else 'raw'} weights, {args.dtype}): {result.num_tensors} "
          f"tensors, {result.num_bytes / 2**20:.1f} MiB -> {', '.join(str(f) for f in result.files)}", file=sys.stderr)
    return 0


def cmd_import(args: argparse.Namespace) -> int:
    from jaxstage.tools.export.importer import import_checkpoint

    report = import_checkpoint(args.src, args.out, config_path=args.config, overrides=args.overrides,
                               t5_dir=args.t5)
    skipped = ", ".join(report["not_imported_config"]) or "nothing"
    if "unused_tensors" in report:  # a whole model: DiT, conditioners, pretransform
        unused = report["unused_tensors"]
        print(f"imported the whole model: {report['used_tensors']} tensors ({report['dit_parameters']:,} DiT "
              f"parameters) from {report['source']} -> {args.out} (step 0); autoencoder -> {report['autoencoder']}; "
              f"T5 from {report['t5']}; {len(unused)} tensors not used{': ' + ', '.join(unused[:5]) if unused else ''}"
              f"; config parts not imported: {skipped}", file=sys.stderr)
        print(f"sample:    jaxstage sample --workdir {args.out} --prompt \"...\" --seconds-total 10 --out x.wav\n"
              f"fine-tune: jaxstage train --workdir RUN --set train.init_from={args.out} (configs/sao_finetune.py)",
              file=sys.stderr)
        return 0
    print(f"imported {report['imported_tensors']} tensors ({report['dit_parameters']:,} DiT parameters) from "
          f"{report['source']} -> {args.out} (step 0); freshly initialized: {', '.join(report['fresh'])}; "
          f"config parts not imported: {skipped}; {report['not_imported_tensors']} non-DiT tensors skipped",
          file=sys.stderr)
    print(f"fine-tune: jaxstage train --workdir {args.out}   (or --set train.init_from={args.out} for a new run)",
          file=sys.stderr)
    return 0


def cmd_autoencoder(args: argparse.Namespace) -> int:
    from jaxstage.tools.export.autoencoder import import_autoencoder

    if args.command == "export-autoencoder" and (Path(args.src) / "run.json").is_file():
        if args.config is not None:
            raise ValueError("--config is for autoencoder directories; a run directory has its own config.json")
        from jaxstage.autoencoder.export import export_run_autoencoder

        out = export_run_autoencoder(args.src, args.out, step=args.step)
        print(f"wrote {out}: the EMA VAE of {args.src}", file=sys.stderr)
        return 0
    if getattr(args, "step", None) is not None:
        raise ValueError("--step selects a checkpoint of a run directory; --src is an autoencoder directory")
    if args.out is None:
        raise ValueError("--out is required unless --src is an autoencoder run directory")

    report = import_autoencoder(args.src, args.out, config_path=args.config)
    print(f"wrote {report['out']}: Oobleck VAE, {report['tensors']} tensors ({report['parameters']:,} parameters) "
          f"from {report['source']}; {report['hop']} samples per latent, {report['latent_dim']} latent channels, "
          f"scale {report['scale']:g}", file=sys.stderr)
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from jaxstage.run.report import write_report

    print(f"wrote {write_report(args.workdir, args.out)}", file=sys.stderr)
    return 0


def cmd_prepare(args: argparse.Namespace) -> int:
    from jaxstage.data.prepare import prepare

    text = ssl = None
    if args.text_encoder:
        from jaxstage.data.encoders import text_encoder_for

        text = text_encoder_for(args.text_encoder, max_length=args.text_max_length)
    if args.ssl_encoder:
        from jaxstage.data.encoders import HFAudioEncoder

        try:
            layers = tuple(int(k) for k in args.ssl_layers.split(",") if k.strip())
        except ValueError:
            raise ValueError(f"--ssl-layers={args.ssl_layers!r}: expected comma-separated integers") from None
        ssl = HFAudioEncoder(args.ssl_encoder, layers=layers, sample_rate=args.sample_rate)
    autoencoder = None
    if args.autoencoder:
        from jaxstage.data.latent_encoder import AutoencoderEncoder

        autoencoder = AutoencoderEncoder(args.autoencoder, args.sample_rate,
                                         int(round(args.sample_rate * args.clip_seconds)), batch_size=args.batch_size)
    meta = prepare(args.manifest, args.out, sample_rate=args.sample_rate, clip_seconds=args.clip_seconds,
                   text_encoder=text, ssl_encoder=ssl, shard_size=args.shard_size, min_seconds=args.min_seconds,
                   kind=args.kind, audio_dir=args.audio_dir, batch_size=args.batch_size, autoencoder=autoencoder,
                   max_seconds=args.max_seconds)
    print(f"prepared {meta['count']} records in {len(meta['shards'])} shards, skipped {len(meta['skipped'])} "
          f"(reasons in dataset.json): {args.out}", file=sys.stderr)
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    if args.task == "sr":
        for flag in ("prompts", "ast", "clap", "cfg", *GUIDANCE_FLAGS):
            if getattr(args, flag) is not None:
                raise ValueError(f"--{flag.replace('_', '-')} is for --task tta")
        if args.workdir is None:
            return _eval_sr_files(args)
        if args.ref is not None or args.est is not None or args.input_sr is not None:
            raise ValueError("--workdir scores the run's own held-out clips: drop --ref/--est/--input-sr")
    elif args.workdir is None:
        raise ValueError("--task tta needs --workdir RUN (a text-to-audio run directory)")
    elif args.ref is not None or args.est is not None or args.input_sr is not None:
        raise ValueError("--task tta scores a run: drop --ref/--est/--input-sr")
    from jaxstage.eval import sr_report, tta
    from jaxstage.run.workdir import read_run_config

    workdir, cfg = read_run_config(args.workdir)
    cfg = with_guidance_flags(args, cfg)
    _check_steps(args.steps)
    common = dict(n=args.n, sampler=args.sampler, steps=args.steps, step=args.step, out=args.out)
    if args.task == "sr":
        report, out = sr_report.evaluate_run(workdir, cfg, **common)
        for name, m in report["mean"].items():
            print(f"{name:18s} LSD {m['lsd']:.3f}  LSD-HF {m['lsd_hf']:.3f}  LSD-LF {m['lsd_lf']:.3f}  "
                  f"SI-SDR {m['si_sdr']:.2f} dB")
        print(f"sr eval: {report['count']} held-out clips of {workdir} at step {report['step']} -> {out}",
              file=sys.stderr)
        return 0
    report, out = tta.evaluate_run(workdir, cfg, prompts_file=args.prompts, ast_dir=args.ast, clap_dir=args.clap,
                                   cfg_scale=args.cfg, seed=args.seed, **common)
    print(json.dumps(report["metrics"], indent=2))
    print(f"tta eval: {report['count']} prompts of {workdir} at step {report['step']} -> {out}", file=sys.stderr)
    return 0


def _eval_sr_files(args: argparse.Namespace) -> int:
    if args.ref is None or args.est is None:
        raise ValueError("--task sr needs --ref DIR and --est DIR (or --workdir RUN to score a run's held-out clips)")
    if args.input_sr is None:
        raise ValueError("--input-sr is required for --task sr (the LSD-HF/LF split needs the input's sample rate)")
    from jaxstage.eval.sr_files import default_out, evaluate_dirs

    out = Path(args.out) if args.out else default_out(args.est)
    res = evaluate_dirs(args.ref, args.est, args.input_sr, out, allow_missing=args.allow_missing)
    mean = res["mean"]
    skipped = f" (skipped {len(res['missing'])} without an estimate)" if res.get("missing") else ""
    print(f"sr eval: {res['count']} files{skipped}, LSD {mean['lsd']:.4f}, LSD-HF {mean['lsd_hf']:.4f}, "
          f"LSD-LF {mean['lsd_lf']:.4f}, SI-SDR {mean['si_sdr']:.2f} dB -> {out}")
    return 0


def _check_steps(steps: int | None) -> None:
    if steps is not None and steps < 1:
        raise ValueError(f"--steps={steps} must be >= 1")


def cmd_sample(args: argparse.Namespace) -> int:
    _check_steps(args.steps)
    from jaxstage.inference import wav_files
    from jaxstage.run.workdir import read_run_config

    workdir, cfg = read_run_config(args.workdir)
    if cfg.task == "autoencoder":
        raise ValueError(f"{workdir} is an autoencoder run (task=autoencoder): it samples nothing; its VAE is "
                         f"{workdir / 'autoencoder'} (use it as codec.autoencoder of a latent diffusion run)")
    cfg = with_guidance_flags(args, cfg)

    settings = dict(step=args.step, ema=not args.no_ema, sampler=args.sampler, steps=args.steps, seed=args.seed,
                    raw_levels=args.raw_levels)
    if cfg.task == "sr":
        if args.prompt:
            raise ValueError(f"{workdir} is a super-resolution run (task=sr): give --input, not --prompt")
        if args.input is None:
            raise ValueError(f"{workdir} is a super-resolution run (task=sr): give --input LOW.wav (or a folder)")
        if args.cfg is not None and args.cfg != 1.0:
            raise ValueError(f"--cfg {args.cfg:g}: super-resolution samples without classifier-free guidance")
        inputs = wav_files.read_low_band_inputs(cfg, args.input, args.out, args.cutoff)
        for item, _ in inputs:
            if item.warning:
                print(f"jaxstage sample: warning: {item.warning}", file=sys.stderr)
        for item, dest, peak in wav_files.super_resolve_to_wav(workdir, cfg, inputs, replace=args.replace_low_band,
                                                               **settings):
            print(f"wrote {dest} ({item.file_rate} Hz input, cutoff {item.cutoff_hz:g} Hz; "
                  f"{_level_note(peak, cfg, args.raw_levels)})", file=sys.stderr)
        return 0
    if args.input is not None or args.cutoff is not None or args.replace_low_band is not None:
        raise ValueError(f"--input/--cutoff/--replace-low-band are for super-resolution runs; {workdir} is "
                         f"task={cfg.task} (give --prompt)")
    if not args.prompt:
        raise ValueError(f"{workdir} is a text-to-audio run: give at least one --prompt")
    for path, peak in wav_files.text_to_wav(workdir, cfg, args.prompt, args.out, cfg_scale=args.cfg,
                                            seconds_start=args.seconds_start, seconds_total=args.seconds_total,
                                            **settings):
        print(f"wrote {path} ({_level_note(peak, cfg, args.raw_levels)})", file=sys.stderr)
    return 0


def _level_note(peak: float, cfg, raw_levels: bool) -> str:
    if peak <= 1.0:
        return f"peak {peak:.2f}"
    fix = "clipped (--raw-levels)" if raw_levels else f"scaled to {cfg.sample.peak_level:g}"
    return f"peak {peak:.2f}: above full scale, {fix}"


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from jaxstage.config import ConfigError

    handlers = {"train": cmd_train, "sample": cmd_sample, "report": cmd_report, "prepare": cmd_prepare,
                "eval": cmd_eval, "export": cmd_export, "import": cmd_import,
                "aot-check": cmd_aot_check, "posttrain": cmd_train, "import-autoencoder": cmd_autoencoder,
                "export-autoencoder": cmd_autoencoder}
    try:
        return handlers[args.command](args)
    except (ConfigError, ValueError, FileNotFoundError, FileExistsError, ImportError) as err:
        print(f"jaxstage {args.command}: error: {err}", file=sys.stderr)
        return 2
    except (RuntimeError, OSError) as err:  # CheckpointError, TrainingError, a full disk, ...
        print(f"jaxstage {args.command}: error: {err}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())

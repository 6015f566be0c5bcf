"""Signal-analysis accuracy of a trained synthetic run's generated audio, for several sampler settings.

    python bench/attributes.py --workdir runs/synth_t2a --cfg 1 3 5 --sampler euler heun --steps 32

Prints one JSON line per (sampler, cfg) with per-attribute accuracies and the source confusion.
"""

from __future__ import annotations

import argparse
import collections
import json


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", required=True)
    parser.add_argument("--cfg", type=float, nargs="+", default=[3.0])
    parser.add_argument("--sampler", nargs="+", default=["euler"])
    parser.add_argument("--steps", type=int, default=32)
    parser.add_argument("--prompts", type=int, default=90)
    parser.add_argument("--seed", type=int, default=None, help="prompt seed (default: the run's final-eval seed)")
    args = parser.parse_args()

    from pathlib import Path

    from jaxstage.config import load_json
    from jaxstage.data.synthetic import prompt_set
    from jaxstage.eval.attributes import analyze, attribute_accuracy
    from jaxstage.inference.load import load_run
    from jaxstage.inference.sampling import Generator

    cfg = load_json(Path(args.workdir) / "config.json")
    exp, state = load_run(cfg, args.workdir)
    generate = Generator(exp)
    prompts = prompt_set(cfg.sample.seed + 1 if args.seed is None else args.seed, args.prompts)
    for sampler in args.sampler:
        for scale in args.cfg:
            audio = generate(state.ema_params, state.codec_stats, [p for p, _ in prompts], sampler=sampler,
                             steps=args.steps, cfg_scale=scale, seed=0)
            predicted = [analyze(a, cfg.data.sample_rate) for a in audio]
            truth = [t for _, t in prompts]
            confusion = collections.Counter(f"{t['source']}->{p['source']}" for p, t in zip(predicted, truth))
            print(json.dumps({"sampler": sampler, "cfg": scale, "steps": args.steps,
                              "accuracy": attribute_accuracy(predicted, truth),
                              "source_confusion": dict(confusion.most_common())}), flush=True)


if __name__ == "__main__":
    main()

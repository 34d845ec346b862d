"""``huihua eval-synth``: GenEval-style accuracy of a model on the procedural world's prompt sets."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    from huihua.train.synth_eval import SynthEvalParams

    d = SynthEvalParams()
    p = sub.add_parser("eval-synth", help="score a model on the synthetic world (accuracy per category)")
    p.add_argument("--model", type=Path, default=None, help="checkpoint (default: the embedded model)")
    p.add_argument("--steps", type=int, default=d.steps)
    p.add_argument("--cfg-scale", type=float, default=d.cfg_scale)
    p.add_argument("--sampler", default=d.sampler, help="sampler name as A1111 spells it")
    p.add_argument("--seeds", type=int, nargs="+", default=list(d.seeds), help="seeds per prompt")
    p.add_argument("--limit", type=int, default=None, help="only the first N prompts of each category")
    p.add_argument("--set", choices=("both", "in_distribution", "heldout"), default="both")
    p.add_argument("--threads", type=int, default=1, help="CPU threads")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import torch

    import huihua
    from huihua.assets import default_model_path
    from huihua.synth.evaluate import evaluate
    from huihua.train.synth_eval import SynthEvalParams, make_generate_fn, prompt_sets

    torch.set_num_threads(max(1, args.threads))
    params = SynthEvalParams(steps=args.steps, cfg_scale=args.cfg_scale, sampler=args.sampler,
                             seeds=tuple(args.seeds), limit=args.limit)
    engine = huihua.load(args.model or default_model_path(), device="cpu")
    generate_fn = make_generate_fn(engine, params)
    for name, prompts in prompt_sets(params.limit).items():
        if args.set not in ("both", name):
            continue
        report = evaluate(generate_fn, prompts, params.seeds)
        print(f"== {name} ({len(prompts)} prompts x {len(params.seeds)} seeds, {params.sampler}, "
              f"{params.steps} steps, CFG {params.cfg_scale})")
        print(report.format())
        sys.stdout.flush()
    return 0

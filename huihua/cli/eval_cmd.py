"""``huihua eval-synth``: GenEval-style accuracy of a model on the procedural world's prompt sets."""

from __future__ import annotations

import argparse
import sys

import torch

import huihua
from huihua.assets import default_model_path
from huihua.synth.evaluate import evaluate
from huihua.train.synth_eval import SynthEvalParams, make_generate_fn, prompt_sets


def run(args: argparse.Namespace) -> int:
    torch.set_num_threads(max(1, args.threads))
    given = {"steps": args.steps, "cfg_scale": args.cfg_scale, "sampler": args.sampler,
             "seeds": tuple(args.seeds) if args.seeds else None, "limit": args.limit}
    params = SynthEvalParams(**{k: v for k, v in given.items() if v is not None})
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

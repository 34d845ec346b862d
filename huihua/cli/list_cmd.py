"""``huihua list {loras,embeddings,controlnets,samplers,schedulers}``: what is available by name."""

from __future__ import annotations

import argparse
import sys

from huihua import api
from huihua.adapters.lora_networks import FolderNetworks
from huihua.diffusion.names import list_samplers, list_schedules

_FOLDER_OPTION = {"loras": "--lora-dir", "embeddings": "--embedding-dir", "controlnets": "--controlnet-dir"}


def run(args: argparse.Namespace) -> int:
    if args.what in ("samplers", "schedulers"):
        for name in list_samplers() if args.what == "samplers" else list_schedules():
            print(name)
        return 0
    if args.what == "controlnets":
        files = api.list_controlnets(args.controlnet_dir)
        user_dirs = args.controlnet_dir
    else:
        networks = FolderNetworks(args.lora_dir, args.embedding_dir)
        files = networks.list_loras() if args.what == "loras" else networks.list_embeddings()
        user_dirs = args.lora_dir if args.what == "loras" else args.embedding_dir
    for path in files:
        print(f"{path.stem}\t{path}")
    if not user_dirs:
        found = "only the bundled ones" if files else f"no {args.what}"
        print(f"huihua: {found}; add {_FOLDER_OPTION[args.what]} DIR to list your own", file=sys.stderr)
    return 0

"""``huihua list {loras,embeddings,samplers,schedulers}``: what is available by name."""

from __future__ import annotations

import argparse

from huihua.adapters.lora_networks import FolderNetworks
from huihua.diffusion.names import list_samplers, list_schedules


def run(args: argparse.Namespace) -> int:
    if args.what in ("samplers", "schedulers"):
        for name in list_samplers() if args.what == "samplers" else list_schedules():
            print(name)
        return 0
    networks = FolderNetworks(args.lora_dir, args.embedding_dir)
    files = networks.list_loras() if args.what == "loras" else networks.list_embeddings()
    for path in files:
        print(f"{path.stem}\t{path}")
    return 0

"""``huihua list {loras,embeddings,samplers,schedulers}``: what is available by name."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("list", help="list LoRAs, embeddings, samplers or schedulers")
    p.add_argument("what", choices=["loras", "embeddings", "samplers", "schedulers"])
    p.add_argument("--lora-dir", action="append", type=Path, default=[], help="folder of LoRA files (repeatable)")
    p.add_argument("--embedding-dir", action="append", type=Path, default=[],
                   help="folder of textual-inversion embeddings (repeatable)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.what in ("samplers", "schedulers"):
        from huihua.diffusion.names import list_samplers, list_schedules

        for name in list_samplers() if args.what == "samplers" else list_schedules():
            print(name)
        return 0
    from huihua.adapters.lora_networks import FolderNetworks

    networks = FolderNetworks(args.lora_dir, args.embedding_dir)
    files = networks.list_loras() if args.what == "loras" else networks.list_embeddings()
    for path in files:
        print(f"{path.stem}\t{path}")
    return 0

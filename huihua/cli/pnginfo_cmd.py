"""``huihua png-info IMAGE``: print the picture's A1111 parameters text (and, with --json, the replay record)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from huihua.errors import HuihuaError


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("png-info", help="print the generation parameters stored in a picture")
    p.add_argument("image", type=Path)
    p.add_argument("--json", action="store_true", help="print the JSON replay record instead of the text")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from huihua.infotext import read_infotext, read_json_params

    if not args.image.is_file():
        raise HuihuaError(f"{args.image}: no such file")
    if args.json:
        record = read_json_params(args.image)
        if record is None:
            raise HuihuaError(f"{args.image}: has no huihua JSON chunk")
        print(json.dumps(record, indent=2, ensure_ascii=False))
        return 0
    text = read_infotext(args.image)
    if not text:
        raise HuihuaError(f"{args.image}: carries no generation parameters")
    print(text)
    return 0

"""``huihua png-info IMAGE``: print the picture's A1111 parameters text (and, with --json, the replay record)."""

from __future__ import annotations

import argparse
import json

from huihua.errors import HuihuaError
from huihua.imagefile import read_infotext, read_json_params


def run(args: argparse.Namespace) -> int:
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

"""`instructrl import {hh-rlhf,alpaca}`: convert public datasets into instructrl's JSONL records."""

from __future__ import annotations

import argparse
import json


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("import", help="convert public datasets (HH-RLHF, Alpaca) into instructrl JSONL")
    p.add_argument("format", choices=["hh-rlhf", "alpaca"], help="input format")
    p.add_argument("inputs", nargs="+", help="input files (.jsonl or .jsonl.gz) or directories")
    p.add_argument("--out", required=True, help="output JSONL file")
    p.add_argument("--limit", type=int, default=None, help="keep at most this many records")
    p.add_argument(
        "--format",
        dest="records_format",
        choices=["text", "messages"],
        default="text",
        help="hh-rlhf: write each prompt as text (default) or as chat turns ('messages', for chat templates)",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from instructrl.datasets.importers import import_alpaca, import_hh_rlhf
    from instructrl.errors import UserError

    if args.format == "hh-rlhf":
        report = import_hh_rlhf(args.inputs, args.out, limit=args.limit, records_format=args.records_format)
    elif args.records_format != "text":
        raise UserError("--format messages applies to hh-rlhf; Alpaca demonstrations are single turns")
    else:
        report = import_alpaca(args.inputs, args.out, limit=args.limit)
    print(
        json.dumps(
            {"read": report.read, "written": report.written, "skipped": report.skipped, "out": args.out}
        )
    )
    return 0

"""Small pieces the stage commands share."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
from collections.abc import Callable
from typing import Any

from instructrl.config import StageConfig, config_from_args
from instructrl.training.runtime import Stopped


@contextlib.contextmanager
def stopped_exit():
    """A run stopped by Ctrl-C / SIGTERM has saved a checkpoint: say so and exit 130."""
    try:
        yield
    except Stopped as e:
        print(f"\n{e}", file=sys.stderr)
        sys.exit(130)


def report(out: str, summary: dict) -> None:
    if int(os.environ.get("RANK", "0")) != 0:  # under accelerate launch, the main process reports
        return
    print(json.dumps(summary, indent=2))
    print(f"wrote {out}/final, {out}/summary.json, {out}/metrics.jsonl", file=sys.stderr)


def run_command(
    args: argparse.Namespace, config_cls: type[StageConfig], run_stage: Callable[..., dict], **inputs: Any
) -> int:
    """A stage command: its config from --config/--set, the stage on `inputs` into --out (--resume), the
    summary printed; a stop by Ctrl-C / SIGTERM exits 130."""
    config, changed = config_from_args(config_cls, args)
    with stopped_exit():
        summary = run_stage(out=args.out, config=config, resume=args.resume, changed_keys=changed, **inputs)
    report(args.out, summary)
    return 0

"""Small pieces the stage commands share."""

from __future__ import annotations

import contextlib
import json
import os
import sys

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

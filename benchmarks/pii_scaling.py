"""Scaling of the prompt intake's personal-information check: `find_pii` on 1, 2, 4, 8 MB of adversarial text.

    python benchmarks/pii_scaling.py [--sizes-mb 1 2 4 8] [--repeats 2]

Per kind, the text is one short unit repeated: either nothing but matches of that detector (every match
is then checked against the others, which was quadratic for phone numbers: issue 23), or a near-miss that
makes a regular expression backtrack. A linear check takes about twice as long per doubling of the text;
the run fails (exit 1) when any doubling costs more than 2.5x. Each time is the best of `--repeats` runs,
so a busy machine inflates it less. Results: benchmarks/results/pii_scaling.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

from instructrl.prompts.pii import find_pii

ADVERSARIAL = {
    "email": "ann.lee@example.com ",
    "phone": "555-123-4567; ",
    "card": "4111 1111 1111 1111, ",
    "ssn": "123-45-6789; ",
    "street_address": "221 Baker Street ",
    "ip_address": "192.168.0.12 ",
    "email near-miss (dotted local parts)": "b.",
    "phone near-miss (digits and dashes)": "1-",
    "card near-miss (digit runs)": "1 ",
    "street near-miss (words, no suffix)": "12 Abc ",
    "ip near-miss (dotted digits)": "1.",
}
MAX_RATIO = 2.5
"""Most a doubling of the text may cost (2.0 is linear; quadratic is 4.0)."""


def best_seconds(text: str, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        find_pii(text)
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes-mb", type=float, nargs="+", default=[1, 2, 4, 8])
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "pii_scaling.json"))
    args = parser.parse_args()

    sizes = [int(mb * 1_000_000) for mb in args.sizes_mb]
    print(f"{'input':<38}" + "".join(f"{mb:>9g} MB" for mb in args.sizes_mb) + "   worst x per doubling")
    rows, ok = [], True
    for name, unit in ADVERSARIAL.items():
        seconds = [best_seconds(unit * (n // len(unit)), args.repeats) for n in sizes]
        ratios = [b / a for a, b in zip(seconds, seconds[1:], strict=False)]
        worst = max(ratios, default=0.0)
        ok = ok and worst <= MAX_RATIO
        print(f"{name:<38}" + "".join(f"{s:>10.2f} s" for s in seconds) + f"   {worst:.2f}")
        rows.append({"input": name, "unit": unit, "bytes": sizes, "seconds": seconds, "ratios": ratios})
    print(f"every doubling <= {MAX_RATIO}x: {'OK' if ok else 'FAILED'}")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    machine = {"python": platform.python_version(), "cpus": os.cpu_count(), "platform": platform.platform()}
    out.write_text(json.dumps({"machine": machine, "max_ratio": MAX_RATIO, "results": rows}, indent=2) + "\n")
    print(f"wrote {out}")
    raise SystemExit(0 if ok else 1)


if __name__ == "__main__":
    main()

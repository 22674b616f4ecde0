"""Summarize py-spy collapsed stacks (`bench/run.py --profile DIR`): where walstream's time goes.

    python bench/profile_summary.py DIR/bulk_seed_0.txt [--top 30] [--filter walstream]

Prints the functions with the most samples on the stack (inclusive) and at the top of it (self), as
percentages of all samples. Idle samples (the event loop waiting in select/epoll) are counted apart.
"""

from __future__ import annotations

import argparse
import collections
import re
import sys
from pathlib import Path

LINE = re.compile(r":\d+\)$")


def summarize(path: Path, top: int, grep: str | None, by_line: bool = False) -> str:
    inclusive: collections.Counter[str] = collections.Counter()
    own: collections.Counter[str] = collections.Counter()
    total = idle = 0
    for line in path.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack:
            continue
        count = int(count_text)
        frames = [f if by_line else LINE.sub(")", f) for f in stack.split(";") if f]
        total += count
        if frames and re.search(r"select \(selectors\.py|_run_once|epoll", frames[-1]):
            idle += count
        own[frames[-1]] += count
        for frame in set(frames):
            inclusive[frame] += count
    lines = [f"{path.name}: {total} samples, {100 * idle / max(total, 1):.1f}% waiting in the event loop's poll"]
    for title, counter in (("inclusive (on the stack)", inclusive), ("self (top of the stack)", own)):
        lines.append(f"\n{title}:")
        shown = 0
        for frame, count in counter.most_common():
            if grep and grep not in frame:
                continue
            lines.append(f"  {100 * count / max(total, 1):5.1f}%  {frame}")
            shown += 1
            if shown >= top:
                break
    return "\n".join(lines)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("files", nargs="+", type=Path)
    p.add_argument("--top", type=int, default=30)
    p.add_argument("--filter", help="only frames containing this text (e.g. walstream)")
    p.add_argument("--lines", action="store_true", help="per line instead of per function")
    args = p.parse_args()
    for path in args.files:
        print(summarize(path, args.top, args.filter, args.lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())

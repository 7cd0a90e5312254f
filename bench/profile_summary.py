"""Summarise py-spy collapsed stacks: `python -m bench.profile_summary FILE [--top N]`.

Prints the share of samples in which each function appears (inclusive) and at the top of the
stack (self), so a profile reads as text.
"""

from __future__ import annotations

import argparse
from collections import Counter


def main() -> None:
    """Print the top functions of one collapsed-stack file."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("file")
    parser.add_argument("--top", type=int, default=30)
    parser.add_argument("--match", default="", help="only stacks containing this text")
    args = parser.parse_args()
    inclusive: Counter[str] = Counter()
    own: Counter[str] = Counter()
    total = 0
    with open(args.file, encoding="utf-8") as stacks:
        for line in stacks:
            stack, _, count_text = line.rstrip().rpartition(" ")
            if not stack or (args.match and args.match not in stack):
                continue
            count = int(count_text)
            frames = [
                frame.split(" (")[0] + " " + frame.split("/")[-1].rstrip(")")
                for frame in stack.split(";")
            ]
            total += count
            for frame in set(frames):
                inclusive[frame] += count
            own[frames[-1]] += count
    print(f"{total} samples")
    print("inclusive:")
    for frame, count in inclusive.most_common(args.top):
        print(f"  {100 * count / total:5.1f}%  {frame}")
    print("self:")
    for frame, count in own.most_common(args.top):
        print(f"  {100 * count / total:5.1f}%  {frame}")


if __name__ == "__main__":
    main()

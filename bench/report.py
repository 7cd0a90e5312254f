"""Percentiles, the printed report and the JSON file every scenario writes."""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any


def percentiles(samples: Sequence[float], *points: int) -> dict[str, float]:
    """``{"p50": …}`` in milliseconds for samples in seconds (nearest rank; 0 when empty)."""
    ordered = sorted(samples)
    found = {}
    for point in points:
        if not ordered:
            found[f"p{point}"] = 0.0
            continue
        rank = min(len(ordered) - 1, max(0, round(point / 100 * len(ordered)) - 1))
        found[f"p{point}"] = round(ordered[rank] * 1000, 2)
    return found


def progress(text: str) -> None:
    """One line of progress on stderr (stdout carries the report)."""
    print(f"  … {text}", file=sys.stderr, flush=True)


def emit(result: dict[str, Any], json_path: str | None) -> None:
    """Print the report and, if asked, write it as JSON."""
    print(render(result))
    if json_path:
        Path(json_path).write_text(json.dumps(result, indent=2, sort_keys=True) + "\n")
        print(f"written to {json_path}")


def render(result: dict[str, Any], indent: str = "") -> str:
    """The result as indented ``key: value`` lines."""
    lines = []
    for key, value in result.items():
        if isinstance(value, list):
            lines.append(f"{indent}{key}:")
            lines += [f"{indent}  {item}" for item in value]
        elif isinstance(value, dict) and not value:
            lines.append(f"{indent}{key}: none")
        elif isinstance(value, dict):
            lines.append(f"{indent}{key}:")
            lines.append(render(value, indent + "  "))
        else:
            lines.append(f"{indent}{key}: {value}")
    return "\n".join(lines)

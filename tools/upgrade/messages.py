"""Messages across releases: what one build writes on ASSAY_JOBS and ASSAY_EVENTS, the other
reads — field by field, and a queue message all the way through the reader's worker
(``parse_message``, then its analyzer). Each side runs in its own interpreter
(``probe/message_probe.py``), so each uses only its own generated code."""

from __future__ import annotations

import json
import subprocess
import tempfile
from pathlib import Path
from typing import Any

from tools.upgrade.build import Build

PROBE = Path(__file__).parent / "probe" / "message_probe.py"


def _probe(build: Build, *args: str) -> None:
    done = subprocess.run(
        [str(build.python), str(PROBE), *args],
        cwd=build.src,
        env=build.env(),
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"the message probe failed in {build.label}: {done.stderr[-3000:]}")


def compare(written: list[dict[str, Any]], read: dict[str, Any]) -> list[str]:
    """What the reader got wrong: an error, a field it knows but lost, renamed or changed."""
    problems = []
    for case in written:
        name, got = case["name"], read[case["name"]]
        if got["error"]:
            problems.append(f"{name}: {got['error']}")
        known = {str(number) for number in got["known"]}
        for number, (field, value) in case["fields"].items():
            if number not in known:
                continue  # a field the reader's release does not have: skipped, as proto3 does
            if number not in got["fields"]:
                problems.append(f"{name}: field {number} ({field}) was lost")
                continue
            their_name, their_value = got["fields"][number]
            if their_name != field:
                problems.append(f"{name}: field {number} is {field!r} here, {their_name!r} there")
            elif their_value != value:
                problems.append(f"{name}: field {number} ({field}) {value!r} → {their_value!r}")
    return problems


def exchange(writer: Build, reader: Build) -> list[str]:
    """Messages written by ``writer`` and read by ``reader``; the problems, [] when none."""
    with tempfile.TemporaryDirectory(prefix="assay-messages-") as tmp:
        written_path, read_path = Path(tmp) / "written.json", Path(tmp) / "read.json"
        _probe(writer, "write", str(written_path))
        _probe(reader, "read", str(written_path), str(read_path))
        written = json.loads(written_path.read_text())
        read = json.loads(read_path.read_text())
    return [f"{writer.label} → {reader.label}: {p}" for p in compare(written, read)]


def check(release: Build, tree: Build) -> list[str]:
    """Both directions of a roll: the release's messages read by the tree, and back."""
    return exchange(release, tree) + exchange(tree, release)

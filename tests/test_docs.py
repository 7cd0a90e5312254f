"""The generated parts of the docs match the code they come from."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_architecture_state_table_matches_the_code() -> None:
    check = subprocess.run(
        [sys.executable, "tools/gen_docs.py", "--check"], cwd=ROOT, capture_output=True, text=True
    )
    assert check.returncode == 0, check.stderr


def test_the_readme_points_inside_the_repository() -> None:
    readme = (ROOT / "README.md").read_text()
    assert "shared/design" not in readme
    assert "docs/architecture.md" in readme and (ROOT / "docs" / "architecture.md").exists()

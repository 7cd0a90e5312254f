"""The dependency rules of ARCHITECTURE §1, checked on the source: services never import
one another; the shared package imports no service and nothing from tests; gen/ imports
nothing of ours; the CLI uses only the shared package and gen/."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SERVICES = ("archive_svc", "assessment_svc", "worker", "notifier")
OURS = (*SERVICES, "assaylib", "assay_cli", "tests", "bench")


def imported_packages(package_dir: Path) -> dict[str, set[str]]:
    """Top-level packages of ours imported by each module under package_dir."""
    found: dict[str, set[str]] = {}
    for path in package_dir.rglob("*.py"):
        tree = ast.parse(path.read_text(), filename=str(path))
        names: set[str] = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                names.add(node.module.split(".")[0])
        found[str(path.relative_to(ROOT))] = names & {*OURS, "assay"}
    return found


@pytest.mark.parametrize("package", [*SERVICES, "assaylib", "assay_cli"])
def test_package_imports_only_what_it_may(package: str) -> None:
    allowed = {package, "assaylib", "assay"}
    violations = {
        module: sorted(names - allowed)
        for module, names in imported_packages(ROOT / package).items()
        if names - allowed
    }
    assert not violations, f"{package} imports what it must not: {violations}"


def test_generated_code_imports_nothing_of_ours() -> None:
    violations = {
        module: sorted(names - {"assay"})
        for module, names in imported_packages(ROOT / "gen").items()
        if names - {"assay"}
    }
    assert not violations

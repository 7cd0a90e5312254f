"""The dependency rules of ARCHITECTURE §1, checked on the source: services never import
one another; the shared package imports no service and nothing from tests; gen/ imports
nothing of ours; the CLI uses only the shared package, gen/ and the client (assay_client)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SERVICES = ("archive_svc", "assessment_svc", "worker", "notifier")
OURS = (*SERVICES, "assaylib", "assay_cli", "assay_client", "tests", "bench")


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
    allowed = {package, "assaylib", "assay"} | (
        {"assay_client"} if package == "assay_cli" else set()
    )
    violations = {
        module: sorted(names - allowed)
        for module, names in imported_packages(ROOT / package).items()
        if names - allowed
    }
    assert not violations, f"{package} imports what it must not: {violations}"


def test_the_client_imports_only_itself_and_gen() -> None:
    client = ROOT / "clients" / "python" / "src" / "assay_client"
    violations = {
        module: sorted(names - {"assay_client", "assay"})
        for module, names in imported_packages(client).items()
        if names - {"assay_client", "assay"}
    }
    assert not violations


def test_generated_code_imports_nothing_of_ours() -> None:
    violations = {
        module: sorted(names - {"assay"})
        for module, names in imported_packages(ROOT / "gen").items()
        if names - {"assay"}
    }
    assert not violations


def module_name(path: Path) -> str:
    """The dotted module name of a source file under the repository root."""
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph(packages: tuple[str, ...]) -> dict[str, set[str]]:
    """Module → the modules of ours it imports (any import, at any depth in the file)."""
    modules = {
        module_name(path): path for package in packages for path in (ROOT / package).rglob("*.py")
    }
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        targets: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.Import):
                targets |= {alias.name for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                # `from package import submodule` needs the submodule, not the package's body.
                submodules = {f"{node.module}.{alias.name}" for alias in node.names}
                found = submodules & modules.keys()
                targets |= found
                if len(found) < len(submodules):
                    targets.add(node.module)
        graph[name] = {target for target in targets if target in modules and target != name}
    return graph


def test_no_import_cycle_anywhere_in_the_tree() -> None:
    graph = import_graph((*SERVICES, "assaylib", "assay_cli", "bench"))
    state: dict[str, str] = {}
    cycles: list[list[str]] = []

    def visit(module: str, trail: list[str]) -> None:
        state[module] = "open"
        for target in sorted(graph[module]):
            if state.get(target) == "open":
                cycles.append([*trail[trail.index(target) :], target])
            elif target not in state:
                visit(target, [*trail, target])
        state[module] = "done"

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])
    assert not cycles, f"import cycles: {cycles[:5]}"

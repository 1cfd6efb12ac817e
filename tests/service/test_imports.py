"""The service's modules import each other in one direction: no circle, even through a lazy import."""

import ast
from pathlib import Path

SERVICE = Path(__file__).resolve().parents[2] / "service"


def _imports(path: Path) -> set[str]:
    """The `service.*` modules `path` imports anywhere (top level, in functions, under TYPE_CHECKING)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("service"):
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names if alias.name.startswith("service")}
    return found


def test_no_module_of_the_service_imports_itself_back() -> None:
    graph = {
        ".".join(("service", *path.relative_to(SERVICE).with_suffix("").parts)): _imports(path)
        for path in SERVICE.rglob("*.py")
    }
    done: set[str] = set()

    def visit(module: str, trail: tuple[str, ...]) -> None:
        assert module not in trail, "import circle: " + " -> ".join((*trail[trail.index(module) :], module))
        if module in done:
            return
        for imported in graph.get(module, ()):
            visit(imported, (*trail, module))
        done.add(module)

    for module in graph:
        visit(module, ())
    assert "service.storage_base" in graph["service.results"]  # recover_abandoned_jobs takes the store

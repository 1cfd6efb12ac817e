"""The package layering of DESIGN.md section 2, checked on the source: dependencies point one way
and no module-level import runs in a circle."""

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("contract", "models", "worker", "service", "deepweightflow")
# package -> the project packages it may import at module level
ALLOWED = {
    "contract": set(),
    "models": {"contract"},
    "service": {"contract"},
    "worker": {"contract", "models", "service"},
    "deepweightflow": {"contract", "models", "service", "worker"},
}


def module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(path: Path, lazy: bool = False) -> set[str]:
    """Project modules `path` imports at module level, `if TYPE_CHECKING:` blocks included (a type is a
    dependency too); with `lazy`, also those imported inside functions."""
    tree = ast.parse(path.read_text())
    if lazy:
        nodes = list(ast.walk(tree))
    else:
        nodes = tree.body + [
            n
            for node in tree.body
            if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)
            for n in node.body
        ]
    found = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found |= {f"{node.module}.{alias.name}" for alias in node.names}
    return {name for name in found if name.split(".")[0] in PACKAGES}


def import_graph(lazy: bool = False) -> dict[str, set[str]]:
    modules = {module_name(p): p for package in PACKAGES for p in (REPO / package).rglob("*.py")}
    return {name: {i for i in imported_modules(path, lazy) if i in modules} for name, path in modules.items()}


def test_dependencies_point_one_way() -> None:
    wrong = [
        f"{module} imports {target}"
        for module, targets in import_graph().items()
        for target in targets
        if target.split(".")[0] != module.split(".")[0]
        and target.split(".")[0] not in ALLOWED[module.split(".")[0]]
    ]
    assert not wrong, wrong


def test_no_import_circle_even_through_a_lazy_import() -> None:
    graph = import_graph(lazy=True)
    state: dict[str, str] = {}
    cycles = []

    def visit(module: str, path: list[str]) -> None:
        state[module] = "open"
        for target in sorted(graph[module]):
            if state.get(target) == "open":
                cycles.append(" -> ".join([*path[path.index(target) :], target]))
            elif target not in state:
                visit(target, [*path, target])
        state[module] = "done"

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])
    assert not cycles, cycles
    assert "service.storage_base" in graph["service.results"]  # recover_abandoned_jobs takes the store

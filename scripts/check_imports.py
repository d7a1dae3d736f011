#!/usr/bin/env python3
"""The import rules of the tree, checked over its import graph (run by scripts/run_tests.sh).

  (a) the runtime (processors/runtime/) imports no stage or domain module: it runs any stage and
      must not depend on one. launch.py finds a stage's class through processors.topology and
      imports it by a string read from there, which is not an import of a named stage.
  (b) nothing in processors/ or gpu_workers/ imports gateway: the stages never depend on the CLI,
      the HTTP API or the SRE tools.
  (c) the web app and the CLI (gateway/web/, gateway/cli/) reach stages only through
      processors.topology, processors.runtime.launch and gateway.ops: no stage module (anything
      under processors.stages or gpu_workers, or a module the topology names as a stage's class).
  (d) no import cycles among the tree's modules (a TYPE_CHECKING-only import still ties the two
      modules together: neither can be read, moved or tested without the other).

Every import counts: at module level, inside functions (lazy), under TYPE_CHECKING, and
importlib.import_module / __import__ with a literal name. Relative imports are resolved.

Usage: scripts/check_imports.py [ROOT]   (ROOT defaults to the repository). Prints one line per
violation, "path:line: rule: what", and exits 1 if there is any.
"""

from __future__ import annotations

import ast
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

PACKAGES = ("processors", "gpu_workers", "gateway", "schemas", "deploy")

# Rule (a): what the runtime may not import.
DOMAIN_MODULES = (
    "processors.stages",
    "processors.intake",
    "processors.references",
    "processors.prompting",
    "processors.routing",
    "processors.imaging",
    "processors.state",
    "processors.eventlog",
    "gpu_workers",
    "gateway",
)
# Rule (c): stage code, besides the modules the topology names as stage classes.
STAGE_PACKAGES = ("processors.stages", "gpu_workers")


@dataclass(frozen=True)
class Import:
    path: Path  # relative to the root
    line: int
    module: str
    # For `from pkg import a, b`: the names, which may be submodules of pkg (module is pkg).
    names: tuple[str, ...] = ()

    def modules(self) -> list[str]:
        """Every module this import may load: `from processors import stages` loads
        processors.stages as well as processors."""
        return [self.module, *(f"{self.module}.{name}" for name in self.names)]


@dataclass(frozen=True)
class Rule:
    name: str
    applies_to: tuple[str, ...]  # path prefixes, relative to the root
    forbidden: tuple[str, ...]  # module names; a submodule of one is forbidden too
    why: str
    # Also through other in-tree modules: importing a module that imports a forbidden one breaks
    # the rule as surely as importing it directly.
    transitive: bool = False

    def covers(self, path: Path) -> bool:
        text = path.as_posix()
        return any(text.startswith(prefix) for prefix in self.applies_to)

    def breach(self, module: str) -> bool:
        return any(module == name or module.startswith(name + ".") for name in self.forbidden)


def module_name(path: Path) -> str:
    parts = list(path.with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _resolve(path: Path, level: int, module: str | None) -> str:
    """An ImportFrom's absolute module: `from ..x import y` in a/b/c.py is a.x."""
    if level == 0:
        return module or ""
    package = module_name(path).split(".")
    if path.name != "__init__.py":
        package.pop()
    base = package[: len(package) - (level - 1)] if level > 1 else package
    return ".".join([*base, module] if module else base)


def _literal_import(node: ast.Call) -> str | None:
    """importlib.import_module("x") / __import__("x") with a literal name: an import all the same."""
    func = node.func
    named = (isinstance(func, ast.Attribute) and func.attr == "import_module") or (
        isinstance(func, ast.Name) and func.id in ("import_module", "__import__")
    )
    if named and node.args and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str):
        return node.args[0].value
    return None


def imports_of(root: Path, path: Path) -> Iterator[Import]:
    tree = ast.parse((root / path).read_text(encoding="utf-8"), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield Import(path, node.lineno, alias.name)
        elif isinstance(node, ast.ImportFrom):
            base = _resolve(path, node.level, node.module)
            names = tuple(alias.name for alias in node.names if alias.name != "*")
            yield Import(path, node.lineno, base, names)
        elif isinstance(node, ast.Call) and (name := _literal_import(node)):
            yield Import(path, node.lineno, name)


def topology_stage_modules(root: Path) -> tuple[str, ...]:
    """The modules processors/topology.py names as stage classes ("module:Class" strings), read
    with ast so that checking the rules imports nothing."""
    topology = root / "processors" / "topology.py"
    if not topology.is_file():
        return ()
    modules = []
    for node in ast.walk(ast.parse(topology.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "StageSpec":
            for arg in node.args:
                if isinstance(arg, ast.Constant) and isinstance(arg.value, str) and ":" in arg.value:
                    modules.append(arg.value.split(":", 1)[0])
    return tuple(modules)


def rules(root: Path) -> list[Rule]:
    return [
        Rule(
            "(a) runtime imports no stage or domain module",
            ("processors/runtime/",),
            DOMAIN_MODULES,
            "the runtime runs any stage; launch.py reaches one through processors.topology",
            transitive=True,
        ),
        Rule(
            "(b) stages import nothing from gateway",
            ("processors/", "gpu_workers/"),
            ("gateway",),
            "the pipeline must not depend on the CLI, the HTTP API or the SRE tools",
            transitive=True,
        ),
        # Not transitive: going through processors.topology, processors.runtime.launch and
        # gateway.ops is the allowed way in.
        Rule(
            "(c) web and CLI reach stages only through the topology and ops",
            ("gateway/web/", "gateway/cli/"),
            STAGE_PACKAGES + topology_stage_modules(root),
            "use processors.topology, processors.runtime.launch or gateway.ops",
        ),
    ]


def python_files(root: Path) -> Iterator[Path]:
    for package in PACKAGES:
        for path in sorted((root / package).rglob("*.py")):
            yield path.relative_to(root)


class ImportGraph:
    """In-tree modules and what each imports (every import, lazy ones included)."""

    def __init__(self, root: Path) -> None:
        self.files = {module_name(path): path for path in python_files(root)}
        self.imports = {module: list(imports_of(root, path)) for module, path in self.files.items()}

    def in_tree(self, module: str) -> str | None:
        """The in-tree module an import loads last (`a.b.c` may name a class in a.b)."""
        while module and module not in self.files:
            module = module.rpartition(".")[0]
        return module or None

    def path_to(self, start: str, rule: Rule) -> list[str] | None:
        """The shortest import chain from start to a module the rule forbids, or None."""
        first = self.in_tree(start)
        if first is None:
            return None
        parents: dict[str, str | None] = {first: None}
        queue = [first]
        while queue:
            current = queue.pop(0)
            for imp in self.imports.get(current, []):
                for name in imp.modules():
                    if rule.breach(name):
                        chain = [name, current]
                        while (parent := parents[chain[-1]]) is not None:
                            chain.append(parent)
                        return chain[::-1]
                    nxt = self.in_tree(name)
                    if nxt is not None and nxt not in parents:
                        parents[nxt] = current
                        queue.append(nxt)
        return None


def _dependencies(graph: ImportGraph, module: str) -> dict[str, Import]:
    """The in-tree modules this one depends on, each with the import that makes it so.
    `from pkg import sub` depends on pkg.sub, not on pkg: reaching a sibling through its package
    is no cycle with the package's __init__ that imports both."""
    deps: dict[str, Import] = {}
    for imp in graph.imports.get(module, []):
        submodules = [name for name in imp.modules()[1:] if name in graph.files]
        everything_a_module = bool(imp.names) and len(submodules) == len(imp.names)
        for target in submodules if everything_a_module else [imp.module, *submodules]:
            found = graph.in_tree(target)
            if found is not None and found != module:
                deps.setdefault(found, imp)
    return deps


def _strongly_connected(edges: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's algorithm, iterative; components of more than one module."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components = []
    for start in sorted(edges):
        if start in index:
            continue
        work = [(start, iter(sorted(edges[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(edges.get(child, ())))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    components.append(sorted(component))
    return components


def cycle_violations(graph: ImportGraph) -> list[str]:
    deps = {module: _dependencies(graph, module) for module in graph.files}
    edges = {module: set(targets) for module, targets in deps.items()}
    found = []
    for component in _strongly_connected(edges):
        members = set(component)
        first = component[0]
        target = sorted(t for t in edges[first] if t in members)[0]
        # A shortest way back from target to first, inside the component, names the cycle.
        parents: dict[str, str | None] = {target: None}
        queue = [target]
        while first not in parents:
            current = queue.pop(0)
            for nxt in sorted(edges[current] & members):
                if nxt not in parents:
                    parents[nxt] = current
                    queue.append(nxt)
        chain = [first]
        while (parent := parents[chain[-1]]) is not None:
            chain.append(parent)
        cycle = [first, *chain[::-1]]
        imp = deps[first][target]
        found.append(
            f"{imp.path.as_posix()}:{imp.line}: (d) no import cycles: {' -> '.join(cycle)}; "
            "move what both need into a module of its own"
        )
    return found


def violations(root: Path) -> list[str]:
    graph = ImportGraph(root)
    checks = rules(root)
    found = []
    for module, path in graph.files.items():
        applicable = [rule for rule in checks if rule.covers(path)]
        reported: set[tuple[int, str]] = set()  # one line per import statement and rule
        for imp in graph.imports[module] if applicable else []:
            for name in imp.modules():
                for rule in applicable:
                    if (imp.line, rule.name) in reported:
                        continue
                    if rule.breach(name):
                        what = f"imports {name}"
                    elif rule.transitive and (chain := graph.path_to(name, rule)):
                        what = f"imports {name}, which leads to {chain[-1]} ({' -> '.join(chain)})"
                    else:
                        continue
                    reported.add((imp.line, rule.name))
                    found.append(f"{path.as_posix()}:{imp.line}: {rule.name}: {what}; {rule.why}")
    return found + cycle_violations(graph)


def main(argv: list[str]) -> int:
    root = Path(argv[1]) if len(argv) > 1 else Path(__file__).resolve().parent.parent
    found = violations(root.resolve())
    for line in found:
        print(line)
    if found:
        print(f"{len(found)} import-rule violation(s); see scripts/check_imports.py", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))

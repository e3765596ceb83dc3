"""One direction of imports (docs/architecture.md): the model below everything that runs it,
audio in below the runtime and training, training and the runtime beside each other, the
command line and config loading on top (cli.py and config.py at the package's root). Every
import that runs counts, at the top of a module or inside a function; only `if
TYPE_CHECKING:` blocks (annotations) do not."""

from __future__ import annotations

import ast
from pathlib import Path

from support.data import REPO

# the package's root: the command (parser, what each does), config.toml's loader, the API
TOP = {"cli.py", "commands.py", "config.py", "__init__.py"}
# area -> the areas it may import (besides itself)
ALLOWED = {
    "model": set(),
    "__init__": set(),  # streamer/__init__.py: a docstring
    "net": set(),
    "audio": {"model"},
    "training": {"model", "audio"},
    "outputs": {"model", "audio"},
    "scoring": {"model", "audio", "outputs"},
    "monitor": {"model", "audio", "outputs", "scoring"},
    "serve": {"model", "audio", "outputs", "scoring", "monitor", "net"},
    "batch": {"model", "audio", "outputs", "scoring", "net"},
}


def area(path: str) -> str:
    if path in TOP:
        return "top"
    parts = path.removesuffix(".py").split("/")
    if parts[0] == "streamer":
        return parts[1]  # a package, or one of the modules net.py and scoring.py
    return parts[0]


def runtime_imports(tree: ast.AST) -> list[ast.ImportFrom | ast.Import]:
    """Imports outside `if TYPE_CHECKING:` blocks."""
    found, skip = [], set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skip |= {id(n) for stmt in node.body for n in ast.walk(stmt)}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import | ast.ImportFrom) and id(node) not in skip:
            found.append(node)
    return found


def target_path(src: str, node: ast.ImportFrom) -> str | None:
    """The repository path a relative import names (a module or a package), if it is ours."""
    base = Path(src).parent.parts
    base = base[: len(base) - (node.level - 1)] if node.level > 1 else base
    module = list(base) + (node.module.split(".") if node.module else [])
    while module:
        for candidate in ("/".join(module) + ".py", "/".join(module) + "/__init__.py"):
            if (REPO / candidate).is_file():
                return candidate
        module = module[:-1]
    return None


def package_sources() -> list[str]:
    """Every module of the `emomon` package, as a repository path."""
    return sorted(p.relative_to(REPO).as_posix() for d in ("model", "streamer", "training") for p in
                  (REPO / d).rglob("*.py")) + sorted(TOP)  # fmt: skip


def import_graph(sources: list[str]) -> dict[str, set[str]]:
    """module -> the modules of ours it imports at run time."""
    graph: dict[str, set[str]] = {src: set() for src in sources}
    for src in sources:
        for node in runtime_imports(ast.parse((REPO / src).read_text())):
            if isinstance(node, ast.ImportFrom) and node.level:
                target = target_path(src, node)
                if target is not None and target != src:
                    graph[src].add(target)
    return graph


def circles(graph: dict[str, set[str]]) -> list[str]:
    """Every cycle a depth-first walk meets, as 'a -> b -> a'."""
    found, state = [], {}  # state: 1 on the path, 2 done

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                found.append(" -> ".join([*path[path.index(nxt) :], nxt]))
            elif nxt not in state:
                visit(nxt, [*path, nxt])
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
    return found


def test_imports_go_one_way_and_never_by_top_level_names() -> None:
    wrong, absolute = [], []
    sources = package_sources()
    assert len(sources) > 60
    for src in sources:
        for node in runtime_imports(ast.parse((REPO / src).read_text())):
            if isinstance(node, ast.Import) or not node.level:
                names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
                absolute += [
                    f"{src}: import {n}" for n in names if n.split(".")[0] in ("model", "streamer", "training")
                ]
                continue
            target = target_path(src, node)
            if target is None:
                continue
            a, b = area(src), area(target)
            if a != b and a != "top" and b not in ALLOWED[a]:
                wrong.append(f"{src}:{node.lineno} ({a}) imports {target} ({b})")
    assert absolute == [], absolute  # `emomon.model`, never a generic top-level `model`
    assert wrong == [], "\n".join(wrong)


def test_no_circles_between_files() -> None:
    """No module reaches itself through emomon's own imports (at the top or inside a function):
    a circle hidden in a function is still one."""
    found = circles(import_graph(package_sources()))
    assert found == [], "\n".join(found)


def test_no_circles_between_packages() -> None:
    """model, streamer and training never reach themselves through each other: training may
    read streamer.audio (the segmenter it trims with), so streamer never imports training;
    only the package's root (the command, the config loader) imports all three."""
    graph: dict[str, set[str]] = {}
    for src, targets in import_graph(package_sources()).items():
        a = "root" if src in TOP else src.split("/")[0]
        graph.setdefault(a, set()).update("root" if t in TOP else t.split("/")[0] for t in targets)
    graph = {a: b - {a} for a, b in graph.items()}
    assert graph["training"] == {"model", "streamer"}, graph  # the one crossing: streamer.audio
    assert "root" not in set().union(*graph.values()), graph
    found = circles(graph)
    assert found == [], "\n".join(found)


def test_test_modules_share_helpers_through_support_only() -> None:
    """Helpers live in tests/support (fixtures in tests/conftest.py) or in emomon itself: a
    test module never imports conftest, another test module, nor a benchmark (benchmarks/
    runs tests' subjects, not the other way)."""
    found = []
    for path in sorted((REPO / "tests").glob("test_*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            names += [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            found += [
                f"{path.name}: {n}"
                for n in names
                if n.split(".")[0].startswith("test_") or n.split(".")[0] in ("benchmarks", "conftest")
            ]
    assert found == [], found


def test_the_layout_in_docs_names_every_module_and_only_those() -> None:
    """docs/architecture.md's Layout lists each module of the package (by indentation under
    its folder) with its job: what it names and what the tree holds are the same."""
    text = (REPO / "docs" / "architecture.md").read_text()
    block = text.split("## Layout", 1)[1].split("```", 2)[1]
    named, folders = set(), []  # folders: (indent, name) of the folders open at this line
    for line in block.splitlines():
        if (
            not line.strip()
            or line[: len(line) - len(line.lstrip())]
            and not line.strip().split()[0].endswith((".py", "/"))
        ):
            continue  # a description carried on to the next line
        indent = len(line) - len(line.lstrip())
        name = line.split()[0]
        folders = [(i, f) for i, f in folders if i < indent]
        if name.endswith("/"):
            folders.append((indent, name.rstrip("/")))
        elif name.endswith(".py"):
            named.add("/".join([f for _, f in folders] + [name]))
    tree = {p.relative_to(REPO).as_posix() for d in ("model", "streamer", "training") for p in (REPO / d).rglob("*.py")}
    tree = {p for p in tree if not p.endswith("__init__.py")} | set(TOP)
    assert sorted(named - tree) == [], "named in docs/architecture.md, not in the tree"
    assert sorted(tree - named) == [], "in the tree, not in docs/architecture.md's Layout"

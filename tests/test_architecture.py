"""docs/architecture.md stays true to the code: every module it names exists, and no pipeline floor imports from a
floor above it (which also rules out import cycles between floors)."""
import ast
import os
import re

import pytest

from conftest import ROOT

DOC = os.path.join(ROOT, "docs", "architecture.md")
# low to high; a module may import from its own floor and the floors below
FLOORS = [("shared", ("pipeline/types.py", "pipeline/runtime.py", "pipeline/model_cache.py")),
          ("media", ("pipeline/media/",)),
          ("audio features", ("pipeline/audio_features.py", "pipeline/whisper_encoder.py")),
          ("faces", ("pipeline/faces/",)),
          ("backends", ("pipeline/backends/",)),
          ("lip-sync", ("pipeline/lipsync/",)),
          ("avatars", ("pipeline/avatars/",)),
          ("jobs", ("pipeline/jobs/",)),
          ("front door", ("pipeline/__init__.py",))]
COMMANDS = ("cli.py", "avatar_cli.py", "batch_cli.py")


def floor_of(path: str) -> int:
    for rank, (_, prefixes) in enumerate(FLOORS):
        if any(path == p or (p.endswith("/") and path.startswith(p)) for p in prefixes):
            return rank
    raise AssertionError(f"{path} belongs to no floor: add it to docs/architecture.md and FLOORS")


def pipeline_modules():
    out = []
    for dirpath, _, names in os.walk(os.path.join(ROOT, "pipeline")):
        out += [os.path.relpath(os.path.join(dirpath, n), ROOT).replace(os.sep, "/") for n in names if n.endswith(".py")]
    return sorted(out)


def pack_modules():
    """Every module of the pack (what ComfyUI and the commands import; not tests, tools or benchmarks)."""
    out = []
    for dirpath, dirs, names in os.walk(ROOT):
        dirs[:] = [d for d in dirs if not d.startswith(".") and
                   (os.path.relpath(os.path.join(dirpath, d), ROOT) not in ("tests", "tools", "bench", "scripts"))]
        out += [os.path.relpath(os.path.join(dirpath, n), ROOT).replace(os.sep, "/") for n in names if n.endswith(".py")]
    return sorted(out)


def imported_files(path: str):
    """Pipeline files a module imports (relative imports resolved; deferred imports inside functions included)."""
    tree = ast.parse(open(os.path.join(ROOT, path)).read())
    package = os.path.dirname(path).split("/") if os.path.dirname(path) else []
    for node in ast.walk(tree):
        if not isinstance(node, ast.ImportFrom) or not node.level:
            continue
        base = package[:len(package) - node.level + 1]
        parts = base + (node.module.split(".") if node.module else [])
        for name in ([None] if node.module else [a.name for a in node.names]):
            target = "/".join(parts + ([name] if name else []))
            for candidate in (target + ".py", target + "/__init__.py"):
                if os.path.exists(os.path.join(ROOT, candidate)):
                    yield candidate
                    break


def test_every_module_named_in_the_doc_exists():
    text = open(DOC).read()
    named = set(re.findall(r"\b((?:pipeline|nodes|models|server)/[\w/]*\.py|cli\.py|avatar_cli\.py)\b", text))
    assert len(named) >= 25, named
    missing = sorted(p for p in named if not os.path.exists(os.path.join(ROOT, p)))
    assert not missing, f"docs/architecture.md names modules that do not exist: {missing}"


def test_every_pipeline_module_is_on_the_page():
    text = open(DOC).read()
    for path in pipeline_modules():
        if path.endswith("__init__.py") and path not in ("pipeline/__init__.py", "pipeline/lipsync/__init__.py",
                                                          "pipeline/avatars/__init__.py"):
            continue
        assert path in text, f"{path} is not described in docs/architecture.md"


def test_every_server_module_is_on_the_page():
    text = open(DOC).read()
    for name in sorted(os.listdir(os.path.join(ROOT, "server"))):
        if name.endswith(".py") and name != "__init__.py":
            assert f"server/{name}" in text, f"server/{name} is not described in docs/architecture.md"


@pytest.mark.parametrize("path", pipeline_modules())
def test_no_floor_imports_from_above(path):
    own = floor_of(path)
    for target in imported_files(path):
        assert not target.startswith(("server/", "nodes/")) and target not in COMMANDS, \
            f"{path} imports {target}: the pipeline never imports the layer above it"
        if target.startswith("pipeline/"):
            assert floor_of(target) <= own, (f"{path} ({FLOORS[own][0]}) imports {target} "
                                             f"({FLOORS[floor_of(target)][0]}), a floor above it")


def test_only_main_imports_the_commands():
    """The commands are thin front ends: no module but ``__main__.py`` imports one (no cli -> server -> cli)."""
    offenders = [(path, target) for path in pack_modules() if path != "__main__.py"
                 for target in imported_files(path) if target in COMMANDS]
    assert not offenders, offenders


def test_the_import_graph_has_no_circle():
    """No module imports itself through others (deferred imports inside functions included)."""
    graph = {path: set(imported_files(path)) for path in pack_modules()}
    assert len(graph) > 80
    state, circles = {}, []

    def visit(path, trail):
        state[path] = "open"
        for target in sorted(graph.get(path, ())):
            if state.get(target) == "open":
                circles.append(trail[trail.index(target):] + [target])
            elif target not in state:
                visit(target, trail + [target])
        state[path] = "done"

    for path in graph:
        if path not in state:
            visit(path, [path])
    assert not circles, circles

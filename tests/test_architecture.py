"""docs/architecture.md stays true to the code: every module it names exists, no pipeline floor imports from a
floor above it (which also rules out import cycles between floors), the floors table and its prose agree with
FLOORS, and the floors diagram draws exactly the imports between its boxes."""
import ast
import functools
import os
import re

import pytest

from conftest import ROOT

DOC = os.path.join(ROOT, "docs", "architecture.md")
PACK = "musetalk_enhanced"  # the package name the pack is imported by; absolute imports of it count too
# low to high; a module may import from its own floor and the floors below
FLOORS = [("shared", ("pipeline/types.py", "pipeline/runtime.py", "pipeline/model_cache.py", "pipeline/cpu_heap.py")),
          ("media", ("pipeline/media/",)),
          ("audio features", ("pipeline/audio_features.py", "pipeline/whisper_encoder.py")),
          ("faces", ("pipeline/faces/",)),
          ("backends", ("pipeline/backends/",)),
          ("lip-sync", ("pipeline/lipsync/",)),
          ("avatars", ("pipeline/avatars/",)),
          ("jobs", ("pipeline/jobs/",)),
          ("front door", ("pipeline/__init__.py",))]
COMMANDS = ("cli.py", "avatar_cli.py", "batch_cli.py")
NUMBERS = {"two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7, "eight": 8, "nine": 9, "ten": 10,
           "eleven": 11, "twelve": 12}


def covers(prefix: str, path: str) -> bool:
    """A file covers itself, a folder (``x/``) everything under it."""
    return path == prefix or (prefix.endswith("/") and path.startswith(prefix))


def floor_of(path: str) -> int:
    for rank, (_, prefixes) in enumerate(FLOORS):
        if any(covers(p, path) for p in prefixes):
            return rank
    raise AssertionError(f"{path} belongs to no floor: add it to docs/architecture.md and FLOORS")


def relative(path: str) -> str:
    return os.path.relpath(path, ROOT).replace(os.sep, "/")


def pipeline_modules():
    out = []
    for dirpath, _, names in os.walk(os.path.join(ROOT, "pipeline")):
        out += [relative(os.path.join(dirpath, n)) for n in names if n.endswith(".py")]
    return sorted(out)


def pack_modules():
    """Every module of the pack (what ComfyUI and the commands import; not tests, scripts or benchmarks)."""
    out = []
    for dirpath, dirs, names in os.walk(ROOT):
        dirs[:] = [d for d in dirs if not d.startswith(".") and
                   (os.path.relpath(os.path.join(dirpath, d), ROOT) not in ("tests", "clients", "bench", "scripts"))]
        out += [relative(os.path.join(dirpath, n)) for n in names if n.endswith(".py")]
    return sorted(out)


# ---------------------------------------------------------------------------------------------------------------------
# the import graph


def module_file(parts):
    """The file of the module ``parts`` (path parts under the pack's folder), or None."""
    for candidate in ("/".join(parts) + ".py", "/".join(parts) + "/__init__.py") if parts else ():
        if os.path.exists(os.path.join(ROOT, candidate)):
            return candidate
    return None


def imported_parts(node, package):
    """What one import statement imports, as parts under the pack's folder: relative imports and absolute ones of
    ``musetalk_enhanced``; ``from m import n`` names the submodule ``m.n`` when there is one, else ``m``."""
    if isinstance(node, ast.Import):
        return [alias.name.split(".")[1:] for alias in node.names if alias.name.startswith(PACK + ".")]
    if not isinstance(node, ast.ImportFrom):
        return []
    if node.level:
        module = package[:len(package) - node.level + 1] + (node.module.split(".") if node.module else [])
    elif node.module == PACK or (node.module or "").startswith(PACK + "."):
        module = node.module.split(".")[1:]
    else:
        return []
    return [module + [alias.name] if module_file(module + [alias.name]) else module for alias in node.names]


def run_path_parts(node):
    """A file the pack runs by its path, ``runpy.run_path(os.path.join(root, "pipeline", "jobs", "boot.py"))``, as
    parts under the pack's folder (the path's string pieces, in order)."""
    if not isinstance(node, ast.Call) or not node.args:
        return []
    if getattr(node.func, "attr", getattr(node.func, "id", None)) != "run_path":
        return []
    pieces = [c.value for c in ast.walk(node.args[0]) if isinstance(c, ast.Constant) and isinstance(c.value, str)]
    return [pieces[:-1] + [pieces[-1][:-3]]] if pieces and pieces[-1].endswith(".py") else []


def imported_files(path: str):
    """Pack files a module imports (relative imports, ``musetalk_enhanced.`` ones) or runs by path
    (``runpy.run_path``); deferred imports inside functions included."""
    tree = ast.parse(open(os.path.join(ROOT, path)).read())
    package = os.path.dirname(path).split("/") if os.path.dirname(path) else []
    for node in ast.walk(tree):
        for parts in imported_parts(node, package) + run_path_parts(node):
            target = module_file(parts)
            if target and target != path:
                yield target


# ---------------------------------------------------------------------------------------------------------------------
# the page


def doc_text() -> str:
    return open(DOC).read()


def doc_part(pattern: str, what: str) -> str:
    """The first group of ``pattern`` on the page; fails naming ``what`` when the page has none."""
    found = re.search(pattern, doc_text(), re.S | re.M)
    assert found, f"docs/architecture.md has no {what}"
    return found.group(1)


def label_paths(label: str):
    """The files and folders a box's label names (``<file>.py``, ``<folder>/``): what the box covers."""
    words = re.split(r"<br/>|[\s,()]+", label)
    return tuple(w for w in words if w.endswith((".py", "/")))


def arrows_of(line: str):
    """``A --> B & C`` (chains too) as {(A, B), (A, C)}."""
    sides = [[end.strip() for end in side.split("&")] for side in re.sub(r'\|[^|]*\|', "", line).split("-->")]
    return {(a, b) for left, right in zip(sides, sides[1:]) for a in left for b in right}


def floors_diagram():
    """The diagram under "## The floors": {box id: the paths its label names} and its arrows {(source, target)}."""
    block = doc_part(r"^## The floors\n.*?^```mermaid\n(.*?)^```", 'mermaid diagram under "## The floors"')
    boxes, arrows = {}, set()
    for line in block.splitlines():
        box = re.fullmatch(r'\s*(\w+)\["(.*)"\]\s*', line)
        if box:
            boxes[box.group(1)] = label_paths(box.group(2))
        elif "-->" in line:
            arrows |= arrows_of(line)
        else:
            assert re.fullmatch(r"\s*(flowchart .*|subgraph \w+\[.*\]|end|%%.*)?\s*", line), \
                f"the floors diagram has a line the test cannot read (boxes ID[\"...\"] and --> arrows only): {line!r}"
    return boxes, arrows


def boxes_of(path: str, boxes):
    return [box for box, paths in boxes.items() if any(covers(p, path) for p in paths)]


@functools.lru_cache(maxsize=None)
def imports_between_boxes():
    """{(source box, target box): (an importing file, the file it imports)} for every import between two boxes."""
    boxes, _ = floors_diagram()
    found = {}
    for path in pack_modules():
        for target in imported_files(path):
            for source_box in boxes_of(path, boxes):
                for target_box in boxes_of(target, boxes):
                    if source_box != target_box:
                        found.setdefault((source_box, target_box), (path, target))
    return found


def why_false(source: str, target: str, boxes) -> str:
    """Why the arrow ``source --> target`` is false: an end that is no box, or no import behind it."""
    strangers = [end for end in (source, target) if end not in boxes]
    if strangers:
        return f"{source} --> {target}: {strangers} not boxes naming files (a subgraph's arrows are not read)"
    return f"{source} --> {target}: no module of {source} {boxes[source]} imports one of {target} {boxes[target]}"


def floors_table():
    """The floors table's rows, top first: [(floor, [modules])]."""
    rows = doc_part(r"^\| floor \| modules \| one concept \|\n\|[-| ]+\|\n((?:\|[^\n]*\n)+)", "floors table")
    cells = [row.strip("| ").split(" | ") for row in rows.splitlines()]
    return [(cell[0].strip(), re.findall(r"`([\w/]+\.py)`", cell[1])) for cell in cells]


# ---------------------------------------------------------------------------------------------------------------------
# the tests


def test_every_module_named_in_the_doc_exists():
    named = set(re.findall(r"\b((?:pipeline|nodes|models|server)/[\w/]*\.py|cli\.py|avatar_cli\.py)\b", doc_text()))
    assert len(named) >= 25, named
    missing = sorted(p for p in named if not os.path.exists(os.path.join(ROOT, p)))
    assert not missing, f"docs/architecture.md names modules that do not exist: {missing}"


def test_every_pipeline_module_is_on_the_page():
    text = doc_text()
    for path in pipeline_modules():
        if path.endswith("__init__.py") and path not in ("pipeline/__init__.py", "pipeline/lipsync/__init__.py",
                                                          "pipeline/avatars/__init__.py"):
            continue
        assert path in text, f"{path} is not described in docs/architecture.md"


def test_every_server_module_is_on_the_page():
    text = doc_text()
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


def test_every_module_is_in_one_box_of_the_floors_diagram():
    """Each box's label names the files and folders it covers; they exist, and each module is in exactly one box."""
    boxes, _ = floors_diagram()
    ghosts = [f"{box}: {path}" for box, paths in boxes.items() for path in paths
              if not os.path.exists(os.path.join(ROOT, path))]
    assert not ghosts, f"boxes of the floors diagram name paths that do not exist: {ghosts}"
    strays = [f"{path} is in {boxes_of(path, boxes) or 'no box'}" for path in pack_modules()
              if len(boxes_of(path, boxes)) != 1]
    assert not strays, "name each module (or its folder) in one box of the floors diagram:\n" + "\n".join(strays)


def test_every_arrow_of_the_floors_diagram_is_an_import():
    boxes, arrows = floors_diagram()
    imports = imports_between_boxes()
    false = [why_false(a, b, boxes) for a, b in sorted(arrows) if (a, b) not in imports]
    assert not false, "the floors diagram draws imports the code does not have:\n" + "\n".join(false)


def test_every_import_between_boxes_is_an_arrow():
    _, arrows = floors_diagram()
    missing = [f"{a} --> {b}: {source} imports {target}"
               for (a, b), (source, target) in sorted(imports_between_boxes().items()) if (a, b) not in arrows]
    assert not missing, "the floors diagram misses these imports:\n" + "\n".join(missing)


def test_the_floors_table_lists_the_floors_top_first():
    """The table's floors are FLOORS (less the front door), top first, each row naming modules of its own floor."""
    table = floors_table()
    assert [name for name, _ in table] == [name for name, _ in reversed(FLOORS) if name != "front door"]
    strays = [f"{module} is listed under {name} but belongs to {FLOORS[floor_of(module)][0]}"
              for name, modules in table for module in modules if FLOORS[floor_of(module)][0] != name]
    assert not strays, strays


def test_each_floor_is_one_box_of_the_floors_diagram():
    boxes, _ = floors_diagram()
    box_of_floor = {}
    for path in pipeline_modules():
        box_of_floor.setdefault(FLOORS[floor_of(path)][0], set()).update(boxes_of(path, boxes))
    split = {floor: sorted(owners) for floor, owners in box_of_floor.items() if len(owners) != 1}
    assert not split, f"floors drawn in more than one box: {split}"
    shared = [box for box in boxes if sum(owners == {box} for owners in box_of_floor.values()) > 1]
    assert not shared, f"boxes that draw more than one floor: {shared}"


def test_the_prose_counts_the_floors_of_the_table():
    """"N floors" on the page is the number of rows of the floors table."""
    words = [word.lower() for word in re.findall(r"\b(\w+) floors\b", doc_text())]
    said = [int(word) if word.isdigit() else NUMBERS[word] for word in words if word.isdigit() or word in NUMBERS]
    assert said, 'the page never says how many floors the pipeline has ("eight floors")'
    rows = len(floors_table())
    assert set(said) == {rows}, f"the page counts {sorted(set(said))} floors; the floors table has {rows} rows"

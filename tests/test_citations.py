"""Citations a user can follow (docs/originals.md, "How the code cites the originals").

A citation is a path ``dir/name.ext`` (``./``, ``../``, ``.../``, ``~/`` or ``/`` in front or not) or a bare
``name.ext`` of a source kind (not json or txt: ``config.json`` alone is too generic), in prose only: Python comments
and docstrings, shell and JavaScript comments, whole Markdown files. URLs and templates (``$VAR/x.json``,
``<root>/x.pt``) are not citations. A citation is fine when, in this order, it is:
1. a file of this repository (from the root, from the citing file's folder, or under ALLOWED_PREFIXES), or one of
   ALLOWED_PATHS;
2. a model file of the registry: a ``WeightFile(key, folder, relpath)``'s relpath, or ending in ``<folder>/<relpath>``;
3. a ``../shared/`` path (CI's fixtures and tools) in a SHARED_OK folder;
4. a file docs/originals.md lists for the original named up to NAME_WINDOW characters before it (this or the
   previous prose line); a bare name matches a listed file's name.
Outside tests/, no file may name PRIVATE notes (spec sections, spec folders, design notes) users do not have.
"""
import ast
import functools
import io
import os
import re
import shutil
import subprocess
import tokenize

import pytest

from conftest import ROOT

DOC = "docs/originals.md"
SCANNED = (".py", ".md", ".sh", ".js")
NAME_WINDOW = 100
SHARED_OK = ("tests/", "bench/", ".ci/")  # test harness, benchmarks and CI may name ../shared/ (skipped without it)
ALLOWED_PATHS = {  # not files anyone can open, but what the text means by them is clear
    "/scripts/app.js": "the URL of ComfyUI's page app module, which a web/ extension imports",
    "../../scripts/app.js": "the same URL as a web/ extension file imports it (two folders up)",
}
ALLOWED_PREFIXES = {  # stripped, then the rest must be a file of this repository
    "ComfyUI-MuseTalk-Enhanced/": "this repository, cloned under the folder name README's install gives it",
    "custom_nodes/ComfyUI-MuseTalk-Enhanced/": "the same clone inside ComfyUI's custom_nodes folder",
}
PRIVATE = re.compile(r"spec §|(?<![\w-])spec/|DESIGN\.md|\.\./shared/spec")

_SOURCE = r"py|sh|js|md|ya?ml|ipynb|cpp|h|cu|toml|cfg"
_DATA = r"json|txt|pth|pt|onnx|safetensors|bin|ckpt|tar|npz|dat"
_START = r"(?<![\w/.~$@%{<>*\\)}\]-])"  # not inside a longer token, not after a placeholder
PATH_RE = re.compile(_START + r"((?:~/|(?:\.{1,3}/)+|/)?(?:\.?[\w@+-][\w.@+-]*/)+[\w+-][\w.+-]*\.(?:%s|%s))(?![\w/-])"
                     % (_SOURCE, _DATA))
BARE_RE = re.compile(_START + r"([A-Za-z_][\w-]*\.(?:%s))(?![\w/-])" % _SOURCE)
JS_COMMENT = re.compile(r"(?<![:\w])//[^\n]*|/\*.*?\*/", re.S)
SH_COMMENT = re.compile(r"(?:^|(?<=\s))#(?!!)[^\n]*", re.M)
URL_RE = re.compile(r"[a-z][\w+.-]*://\S+|\b[\w-]+(?:\.[\w-]+)*\.(?:com|co|org|io|ai|net)/\S*")


# ---------------------------------------------------------------------------------------------- what exists


@functools.lru_cache(maxsize=None)
def repo_files() -> frozenset:
    """Tracked files plus new ones git does not ignore (what a commit would hold), as they are on disk."""
    git = shutil.which("git")
    if not git or not os.path.exists(os.path.join(ROOT, ".git")):
        pytest.skip("not a git checkout: the repository's file list is unknown")
    listed = subprocess.run([git, "-C", ROOT, "ls-files", "--cached", "--others", "--exclude-standard"],
                            capture_output=True, text=True, check=True).stdout.splitlines()
    return frozenset(f for f in listed if os.path.isfile(os.path.join(ROOT, f)) and not f.startswith(".venv/"))


@functools.lru_cache(maxsize=None)
def originals() -> dict:
    """{name: frozenset of the files the page lists for it} from docs/originals.md."""
    with open(os.path.join(ROOT, DOC), encoding="utf-8") as f:
        sections = re.split(r"^## ", f.read(), flags=re.M)
    table = next(s for s in sections if s.startswith("The originals\n"))
    names = re.findall(r"^\| ([^|`]+?) \| https://github\.com/", table, re.M)
    found = {}
    for name in names:
        listing = next((s for s in sections if s.startswith(f"{name} files")), "")
        found[name] = frozenset(re.findall(r"^\| `([^`]+)` \|", listing, re.M))
    return found


@functools.lru_cache(maxsize=None)
def name_re() -> re.Pattern:
    """Any original's name as a word of its own (longest first: ComfyUI-VideoHelperSuite before ComfyUI)."""
    names = sorted(originals(), key=len, reverse=True)
    return re.compile(r"(?<![\w-])(%s)(?![\w-])" % "|".join(map(re.escape, names)))


@functools.lru_cache(maxsize=None)
def model_files() -> frozenset:
    """(folder, relpath) of every ``WeightFile(key, folder, relpath, ...)`` the pack registers."""
    found = set()
    for path in (f for f in repo_files() if f.endswith(".py") and not f.startswith("tests/")):
        source = read(path)
        for node in ast.walk(ast.parse(source)) if "WeightFile(" in source else ():
            func = getattr(node, "func", None)
            if getattr(func, "id", getattr(func, "attr", None)) == "WeightFile" and len(node.args) >= 3:
                folder, relpath = (getattr(a, "value", None) for a in node.args[1:3])
                if isinstance(folder, str) and isinstance(relpath, str):
                    found.add((folder, relpath))
    return frozenset(found)


def read(path: str) -> str:
    with open(os.path.join(ROOT, path), encoding="utf-8") as f:
        return f.read()


def read_text(path: str) -> str:
    """The file as text, or "" for a binary one (pictures, clips, voices)."""
    with open(os.path.join(ROOT, path), "rb") as f:
        data = f.read()
    return "" if b"\0" in data[:8192] else data.decode("utf-8", errors="replace")


# ---------------------------------------------------------------------------------------------- the prose


def prose(path: str, text: str) -> list:
    """(line number, text) of the lines a reader reads: comments, docstrings, Markdown."""
    if path.endswith(".md"):
        return list(enumerate(text.splitlines(), 1))
    if path.endswith(".py"):
        return python_prose(text)
    lines = text.splitlines()
    comment = JS_COMMENT if path.endswith(".js") else SH_COMMENT
    found = {}
    for m in comment.finditer(text):
        first = text.count("\n", 0, m.start()) + 1
        for n in range(first, first + m.group().count("\n") + 1):
            found[n] = lines[n - 1]
    return sorted(found.items())


def python_prose(text: str) -> list:
    """Comments and string statements (docstrings) of a Python file, whole lines."""
    lines, found, last = text.splitlines(), {}, tokenize.NEWLINE
    for tok in tokenize.generate_tokens(io.StringIO(text).readline):
        if tok.type == tokenize.COMMENT:
            found[tok.start[0]] = tok.string
        elif tok.type == tokenize.STRING and last in (tokenize.NEWLINE, tokenize.INDENT, tokenize.DEDENT):
            found.update((n, lines[n - 1]) for n in range(tok.start[0], tok.end[0] + 1))
        if tok.type not in (tokenize.NL, tokenize.COMMENT):
            last = tok.type
    return sorted(found.items())


def citations(path: str, text: str):
    """(line number, cited path, the text before it on this and the previous prose line)."""
    previous = (0, "")
    for number, line in prose(path, text):
        lead = previous[1] + " " if previous[0] == number - 1 else ""
        previous = (number, line)
        blanked = URL_RE.sub(lambda m: " " * len(m.group()), line)
        for pattern in (PATH_RE, BARE_RE):
            for m in pattern.finditer(blanked):
                yield number, m.group(1), (lead + line[:m.start(1)])[-NAME_WINDOW:]


# ---------------------------------------------------------------------------------------------- the rules


def in_repo(path: str, cited: str) -> bool:
    """A file of this repository: from the root, from the citing file's folder, or under an allowed prefix."""
    files = repo_files()
    if "/" not in cited:
        return any(os.path.basename(f) == cited for f in files)
    for prefix in ALLOWED_PREFIXES:
        if cited.startswith(prefix):
            cited = cited[len(prefix):]
    here = os.path.normpath(os.path.join(os.path.dirname(path), cited)).replace(os.sep, "/")
    return cited in files or here in files


def is_model_file(cited: str) -> bool:
    """A weight file of the registry: its relpath, or a path ending in ``<folder>/<relpath>``."""
    cited = cited[4:] if cited.startswith(".../") else cited
    return any(cited == rel or cited == f"{folder}/{rel}" or cited.endswith(f"/{folder}/{rel}")
               for folder, rel in model_files())


def problem(path: str, cited: str, before: str):
    """None when the citation leads somewhere, else what to do about it."""
    if cited in ALLOWED_PATHS or in_repo(path, cited) or is_model_file(cited) or (path == DOC and indexed(cited)):
        return None
    if cited.startswith("../shared/"):
        return None if path.startswith(SHARED_OK) else "name no ../shared file (CI only) outside tests/, bench/"
    named = name_re().findall(before)
    if not named:
        return f"name the original (e.g. MuseTalk `{cited}`; the names are in {DOC}) or cite a file of this repository"
    if not indexed(cited, named[-1]):
        return f"{named[-1]} `{cited}` is not in {DOC}'s {named[-1]} files: fix the path or list the file there"
    return None


def indexed(cited: str, name: str = None) -> bool:
    """The path (or bare file name) is in docs/originals.md's file list of ``name`` (of any original by default)."""
    files = [f for n, listed in originals().items() if name in (None, n) for f in listed]
    return cited in files or cited in map(os.path.basename, files)


def scanned_files() -> list:
    return sorted(f for f in repo_files() if f.endswith(SCANNED))


# ---------------------------------------------------------------------------------------------- the tests


def test_citations_lead_somewhere():
    """Every cited path is a repository file, a model file, ../shared in tests, or a named original's file."""
    broken = []
    for path in scanned_files():
        for number, cited, before in citations(path, read(path)):
            fix = problem(path, cited, before)
            if fix:
                broken.append(f"{path}:{number}: {cited}: {fix}")
    assert not broken, "citations a user cannot follow:\n" + "\n".join(broken)


def test_no_private_files_named():
    """No spec sections, spec folders or design notes (PRIVATE) in any text file outside tests/."""
    found = []
    for path in (f for f in sorted(repo_files()) if not f.startswith("tests/")):
        for number, line in enumerate(read_text(path).splitlines(), 1):
            for mention in PRIVATE.findall(URL_RE.sub(" ", line)):
                found.append(f"{path}:{number}: {mention}: cite a file of this repository or {DOC} instead")
    assert not found, "private files named:\n" + "\n".join(found)


def test_originals_page_names_each_original_with_its_repository():
    """docs/originals.md lists MuseTalk and LatentSync with their repositories and the files the code cites."""
    found = originals()
    assert {"MuseTalk", "LatentSync"} <= set(found), found
    assert found["MuseTalk"] and found["LatentSync"], "the page lists the MuseTalk and LatentSync files the code cites"


@pytest.mark.parametrize("line, fix", [
    ("# the crop as scripts/inference.py makes it", "name the original"),
    ("# the crop as MuseTalk scripts/inference.py makes it", None),
    ("# the crop as MuseTalk scripts/no_such_file.py makes it", "not in docs/originals.md"),
    ("# LatentSync unet_blocks.py", None),
    ("# see pipeline/lipsync/plan.py and ../lipsync/loop.py", None),
    ("# see pipeline/no_such_module.py", "name the original"),
    ("# weights: ComfyUI/models/musetalk/musetalkV15/unet.pth", None),
    ("# measured with ../shared/tools/comfy_frontend.sh", "../shared"),
    ("# $OUT/avatars.json and <root>/x/y.pt are templates; https://example.com/a/b.py is a URL", None),
])
def test_the_check_tells_good_citations_from_bad(line, fix):
    """The rules on made-up comment lines of pipeline/backends/blending.py (so the check can fail)."""
    path = "pipeline/backends/blending.py"
    problems = [problem(path, cited, before) for _, cited, before in citations(path, line + "\n")]
    if fix is None:
        assert problems == [None] * len(problems), problems
    else:
        assert any(p and fix in p for p in problems), problems

"""The Comfy Registry upload (``comfy node publish``): which files ship, that they import on their own the way ComfyUI
imports a custom node, that they make none of the calls the Registry's scanner flags, and comfy-cli's validation.

comfy-cli (comfy_cli/file_utils.py ``zip_files``) zips the files ``git ls-files`` lists that still exist, minus those
matching ``.comfyignore`` (each line stripped, ``#`` lines dropped, ``PathSpec.from_lines("gitwildmatch", ...)``).
"""
from __future__ import annotations

import ast
import functools
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
import tokenize
import warnings

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FOLDER = "ComfyUI-MuseTalk-Enhanced"  # the folder a ComfyUI user gets in custom_nodes/

REQUIRED_FILES = ["__init__.py", "__main__.py", "cli.py", "batch_cli.py", "avatar_cli.py", "install.py",
                  "requirements.txt", "README.md", "LICENSE", "pyproject.toml"]
OPTIONAL_FILES = ["bootstrap.py"]  # ships whenever it exists
SHIPPED_DIRS = ["nodes", "pipeline", "models", "server", "web", "clients", "example_workflows"]  # all of each
LEFT_OUT_DIRS = ["tests", "bench", ".ci", "scripts", "tools", "docker"]


# ---------------------------------------------------------------------------------------------- the shipped list

@functools.lru_cache(maxsize=None)
def tracked_files() -> tuple[str, ...]:
    """``git ls-files`` in the pack folder, as comfy-cli runs it (empty when it is not a git checkout)."""
    git = shutil.which("git")
    if not git:
        return ()
    done = subprocess.run([git, "-C", ROOT, "ls-files"], capture_output=True, text=True)
    if done.returncode != 0:
        return ()
    return tuple(line for line in done.stdout.splitlines() if line.strip())


def ignore_patterns() -> list[str]:
    """The patterns of .comfyignore, read as comfy-cli reads them."""
    path = os.path.join(ROOT, ".comfyignore")
    if not os.path.exists(path):
        return []
    with open(path, encoding="utf-8") as f:
        return [line.strip() for line in f if line.strip() and not line.lstrip().startswith("#")]


def _glob_segment(seg: str) -> str:
    """One path segment of a gitignore pattern as a regex (``*``, ``?``, ``[...]``, backslash escapes)."""
    out, i = "", 0
    while i < len(seg):
        c = seg[i]
        if c == "*":
            out += "[^/]*"
        elif c == "?":
            out += "[^/]"
        elif c == "\\" and i + 1 < len(seg):
            i += 1
            out += re.escape(seg[i])
        elif c == "[" and seg.find("]", i + 2) != -1:
            end = seg.find("]", i + 2)
            body = seg[i + 1:end]
            out += "[" + ("^" + body[1:] if body[0] in "!^" else body).replace("\\", "\\\\") + "]"
            i = end
        else:
            out += re.escape(c)
        i += 1
    return out


def gitignore_regex(pattern: str) -> tuple[re.Pattern, bool]:
    """(regex over file paths, include) of one pattern, as pathspec's gitwildmatch compiles it."""
    include = not pattern.startswith("!")
    pattern = pattern if include else pattern[1:]
    if pattern[:1] == "\\":  # \# and \!
        pattern = pattern[1:]
    dir_only = pattern.endswith("/")
    pattern = pattern.rstrip("/")
    anchored = "/" in pattern  # a slash at the start or in the middle: relative to the pack folder
    segs = pattern.lstrip("/").split("/")
    regex = "" if anchored else "(?:.*/)?"
    for k, seg in enumerate(segs):
        last = k == len(segs) - 1
        if seg == "**":
            regex += ".*" if last else "(?:.*/)?"
        else:
            regex += _glob_segment(seg) + ("" if last else "/")
    regex += "/.*" if dir_only else "(?:/.*)?"
    return re.compile(regex + r"\Z", re.DOTALL), include


def ignore_matcher(patterns: list[str]):
    """``path -> ignored``: pathspec's PathSpec when installed (what comfy-cli uses), else the same rules here."""
    try:
        import pathspec
    except ImportError:
        compiled = [gitignore_regex(p) for p in patterns]

        def match(path: str) -> bool:
            ignored = False
            for regex, include in compiled:  # the last matching pattern decides
                if regex.match(path):
                    ignored = include
            return ignored

        return match
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # pathspec >= 1.0 calls "gitwildmatch" deprecated
        spec = pathspec.PathSpec.from_lines("gitwildmatch", patterns)
    return spec.match_file


def shipped_files() -> list[str]:
    """The files ``comfy node publish`` would upload from this checkout (skips when it is not a git checkout)."""
    files = tracked_files()
    if not files:
        pytest.skip("not a git checkout (or no git): comfy-cli would zip the whole folder, minus .comfyignore")
    ignored = ignore_matcher(ignore_patterns())
    return sorted(f for f in files if os.path.exists(os.path.join(ROOT, f)) and not ignored(f))


def test_upload_ships_the_pack_and_leaves_out_development_files():
    """Everything the pack imports or runs ships; tests, benchmarks, scripts and CI do not."""
    shipped = set(shipped_files())
    tracked = set(tracked_files())
    on_disk = [f for f in tracked if os.path.exists(os.path.join(ROOT, f))]
    quoted = [f for f in tracked if f.startswith('"')]
    assert not quoted, f"git quotes these names (core.quotePath), so comfy-cli cannot find and upload them: {quoted}"

    required = REQUIRED_FILES + [f for f in OPTIONAL_FILES if os.path.exists(os.path.join(ROOT, f))]
    required += [f for f in on_disk if "/" not in f and (f.endswith(".py") or re.fullmatch(r"requirements.*\.txt", f))]
    untracked = [f for f in required if f not in tracked]
    assert not untracked, f"not tracked by git, so comfy-cli does not upload them (git add): {untracked}"
    missing = sorted({f for f in required if f not in shipped})
    assert not missing, f".comfyignore leaves out files the pack needs: {missing}"
    for folder in SHIPPED_DIRS:
        inside = [f for f in on_disk if f.startswith(folder + "/")]
        assert inside, f"{folder}/ has no tracked files"
        left_out = [f for f in inside if f not in shipped]
        assert not left_out, f".comfyignore leaves out files of {folder}/: {left_out}"

    dev = [f for f in shipped if f.split("/")[0] in LEFT_OUT_DIRS]
    assert not dev, f"development files would ship (add them to .comfyignore): {dev}"
    junk = [f for f in shipped if "__pycache__" in f.split("/") or f.endswith(".pyc")]
    assert not junk, junk


def test_pictures_of_shipped_markdown_ship():
    """Every picture a shipped Markdown file shows from the pack folder (README's docs/*.jpg) ships with it."""
    shipped = set(shipped_files())
    broken = []
    for doc in (f for f in shipped if f.endswith(".md")):
        with open(os.path.join(ROOT, doc), encoding="utf-8") as f:
            text = f.read()
        links = re.findall(r"!\[[^\]]*\]\(\s*<?([^)\s>]+)", text) + re.findall(r"<img\b[^>]*\bsrc=[\"']([^\"']+)", text)
        for link in links:
            if re.match(r"[a-z][a-z0-9+.-]*:|#|/", link, re.I):
                continue
            target = os.path.normpath(os.path.join(os.path.dirname(doc), link.split("#")[0])).replace(os.sep, "/")
            if target not in shipped:
                broken.append(f"{doc}: {link}")
    assert not broken, f"pictures that would not ship: {broken}"


# ------------------------------------------------------------------------------------ the upload, on its own

IMPORT_AS_COMFYUI = textwrap.dedent("""
    import importlib.util
    import json
    import os
    import sys

    root, fake_comfy, repo = sys.argv[1:4]
    sys.path.insert(0, fake_comfy)
    import nodes  # ComfyUI's own top-level module, beside the pack's nodes/ package

    name = root.replace(".", "_x_")  # ComfyUI's module name for a custom node folder
    spec = importlib.util.spec_from_file_location(name, os.path.join(root, "__init__.py"),
                                                  submodule_search_locations=[root])
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    venv = os.path.realpath(sys.prefix) + os.sep
    outside = sorted(n for n, m in list(sys.modules.items())
                     if os.path.realpath(getattr(m, "__file__", None) or "/").startswith(repo + os.sep)
                     and not os.path.realpath(m.__file__).startswith(venv))
    print(json.dumps({"nodes": sorted(module.NODE_CLASS_MAPPINGS), "web": getattr(module, "WEB_DIRECTORY", None),
                      "outside": outside}))
""")


def _clean_env(home: str) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    env.update(HOME=home, XDG_CONFIG_HOME=os.path.join(home, ".config"), HF_HUB_OFFLINE="1")
    return env


@pytest.fixture(scope="module")
def upload(tmp_path_factory):
    """A folder ``custom_nodes/ComfyUI-MuseTalk-Enhanced`` holding only the shipped files."""
    base = tmp_path_factory.mktemp("registry")
    dest = base / "custom_nodes" / FOLDER
    for f in shipped_files():
        target = dest / f
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(os.path.join(ROOT, f), target)
    (base / "home").mkdir()
    return dest


def test_upload_imports_and_runs_on_its_own(upload):
    """ComfyUI's import of the upload alone declares nodes; ``python <folder> --help`` and install.py --help work."""
    fake = upload.parent.parent / "fake_comfy"
    fake.mkdir(exist_ok=True)
    (fake / "nodes.py").write_text("NODE_CLASS_MAPPINGS = {}\n")
    env = _clean_env(str(upload.parent.parent / "home"))
    cwd = str(upload.parent.parent)
    runs = {
        "import": [sys.executable, "-I", "-c", IMPORT_AS_COMFYUI, str(upload), str(fake), os.path.realpath(ROOT)],
        "help": [sys.executable, str(upload), "--help"],
        "install": [sys.executable, str(upload / "install.py"), "--help"],
    }
    procs = {k: subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for k, cmd in runs.items()}
    done = {k: (p.communicate(timeout=120), p.returncode) for k, p in procs.items()}
    for k, ((out, err), rc) in done.items():
        assert rc == 0, f"{k}: {' '.join(runs[k][1:2])} ... exited {rc}\n{out[-2000:]}\n{err[-4000:]}"
    seen = json.loads(done["import"][0][0].strip().splitlines()[-1])
    assert seen["nodes"], "NODE_CLASS_MAPPINGS is empty"
    assert not seen["outside"], f"modules loaded from the checkout, not the upload: {seen['outside']}"
    assert seen["web"] and list((upload / seen["web"]).glob("*.js")), f"WEB_DIRECTORY {seen['web']} has no .js"
    assert "usage" in done["help"][0][0].lower()
    assert "usage" in done["install"][0][0].lower()


# ------------------------------------------------------------------------------- what the scanner flags

RISKY_MODULES = {"subprocess": "runs a program", "pip": "installs packages"}
PIP_INSTALL = re.compile(r"\bpip3?(?:\.exe)?[\"']?\s+install\b", re.I)


def _risky(name: str) -> str | None:
    """Why a call to the function ``name`` (dotted, imports resolved) is flagged, or None."""
    head = name.split(".")[0]
    if head in RISKY_MODULES:
        return f"{name}: {RISKY_MODULES[head]}"
    if name in ("os.system", "os.popen", "os.startfile") or name.startswith(("os.exec", "os.spawn", "os.posix_spawn")):
        return name
    if name.startswith("asyncio.create_subprocess_"):
        return name
    if name in ("eval", "exec", "compile", "builtins.eval", "builtins.exec", "builtins.compile"):
        return f"the builtin {name.split('.')[-1]}()"
    return None


def _imported_module(call: ast.Call, name: str) -> str | None:
    """The module a dynamic import call names (``__import__("subprocess")``, ``runpy.run_module("pip")``...)."""
    if name not in ("__import__", "importlib.import_module", "runpy.run_module", "builtins.__import__"):
        return None
    if call.args and isinstance(call.args[0], ast.Constant) and isinstance(call.args[0].value, str):
        return call.args[0].value
    return None


def _strings(node: ast.AST):
    """Every string constant inside ``node``, and each list/tuple of constants joined by spaces."""
    for sub in ast.walk(node):
        if isinstance(sub, ast.Constant) and isinstance(sub.value, str):
            yield sub.value
        elif isinstance(sub, (ast.List, ast.Tuple)):
            yield " ".join(e.value for e in sub.elts if isinstance(e, ast.Constant) and isinstance(e.value, str))


def risky_calls(tree: ast.AST) -> list[tuple[int, str]]:
    """(line, what) of every flagged call or import in a module."""
    aliases = {}
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                aliases[a.asname or a.name.split(".")[0]] = a.name if a.asname else a.name.split(".")[0]
                if a.name.split(".")[0] in RISKY_MODULES:
                    found.append((node.lineno, f"import {a.name}: {RISKY_MODULES[a.name.split('.')[0]]}"))
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            for a in node.names:
                aliases[a.asname or a.name] = f"{node.module}.{a.name}"
            if node.module.split(".")[0] in RISKY_MODULES:
                found.append((node.lineno, f"from {node.module} import: {RISKY_MODULES[node.module.split('.')[0]]}"))

    def dotted(node: ast.AST) -> str | None:
        parts = []
        while isinstance(node, ast.Attribute):
            parts.append(node.attr)
            node = node.value
        if not isinstance(node, ast.Name):
            return None
        return ".".join([aliases.get(node.id, node.id)] + parts[::-1])

    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        name = dotted(node.func)
        if name == "getattr" and len(node.args) >= 2 and isinstance(node.args[1], ast.Constant):
            name = f"{dotted(node.args[0])}.{node.args[1].value}"  # getattr(os, "system")
        if not name:
            continue
        why = _risky(name)
        module = _imported_module(node, name)
        if module and module.split(".")[0] in RISKY_MODULES:
            why = f"{name}({module!r}): {RISKY_MODULES[module.split('.')[0]]}"
        if why and any(PIP_INSTALL.search(s) for arg in node.args + node.keywords for s in _strings(arg)):
            why += ", running pip install"
        if why:
            found.append((node.lineno, why))
    return sorted(set(found))


def shipped_python() -> list[str]:
    return [f for f in shipped_files() if f.endswith(".py")]


def test_shipped_code_makes_no_calls_the_registry_flags():
    """No subprocess, os.system/popen/exec*/spawn*, builtin eval/exec/compile, ``__import__("subprocess")`` or pip."""
    flagged = []
    for rel in shipped_python():
        with open(os.path.join(ROOT, rel), encoding="utf-8") as f:
            source = f.read()
        try:
            tree = ast.parse(source, filename=rel)
        except SyntaxError as e:
            flagged.append(f"{rel}:{e.lineno}: does not parse: {e.msg}")
            continue
        flagged += [f"{rel}:{line}: {why}" for line, why in risky_calls(tree)]
    assert not flagged, "calls the Registry's scanner flags:\n" + "\n".join(flagged)


def test_the_scanner_rules_themselves():
    """The rules flag what they should and let ``.eval()``, ``re.compile``, ``exec_module`` and Ray through."""
    bad = textwrap.dedent("""
        import subprocess as sp  # x
        import os
        from os import system as run_it
        from builtins import exec as ex
        sp.run(["ls"])  # x
        os.system("ls")  # x
        run_it("ls")  # x
        os.execvp("ls", ["ls"])  # x
        os.spawnl(0, "ls")  # x
        os.popen("ls")  # x
        getattr(os, "system")("ls")  # x
        eval("1")  # x
        exec("x = 1")  # x
        ex("x = 1")  # x
        compile("1", "<s>", "eval")  # x
        __import__("subprocess").run("ls")  # x
        import pip  # x
        pip.main(["install", "x"])  # x
        os.system("python -m pip install x")  # x
    """)
    expected = [i for i, line in enumerate(bad.splitlines(), 1) if line.endswith("# x")]
    assert sorted({line for line, _ in risky_calls(ast.parse(bad))}) == expected, risky_calls(ast.parse(bad))
    assert any("pip install" in why for _, why in risky_calls(ast.parse(bad)))
    good = textwrap.dedent("""
        import re, importlib.util, multiprocessing, ray
        model.eval()
        re.compile("x")
        spec.loader.exec_module(module)
        multiprocessing.get_context("spawn").Process(target=f).start()
        ray.init()
        raise RuntimeError("Ray is missing: pip install -r requirements-ray.txt")
    """)
    assert risky_calls(ast.parse(good)) == []


def test_shipped_code_has_one_statement_per_line():
    """comfy-cli's validation warns on E702 (``a; b``) and says it will soon be an error: warn here too."""
    semicolons = []
    for rel in shipped_python():
        with open(os.path.join(ROOT, rel), "rb") as f:
            for tok in tokenize.tokenize(f.readline):
                if tok.type == tokenize.OP and tok.string == ";":
                    semicolons.append(f"{rel}:{tok.start[0]}")
    semicolons = sorted(set(semicolons))
    if semicolons:
        warnings.warn(f"several statements on one line (comfy-cli warns E702, soon an error): {semicolons}")


# ----------------------------------------------------------------------------------- comfy-cli's validation

def comfy_cli_command() -> list[str] | None:
    """comfy-cli in this interpreter, or the ``comfy`` executable that $COMFY_CLI names."""
    if os.environ.get("COMFY_CLI"):
        return [os.environ["COMFY_CLI"]]
    if importlib.util.find_spec("comfy_cli") is not None:
        return [sys.executable, "-m", "comfy_cli"]
    return None


def test_comfy_node_validate(upload):
    """``comfy node validate`` on the upload: pyproject.toml read without a warning, no exec/eval (S102, S307)."""
    command = comfy_cli_command()
    if command is None:
        pytest.skip("comfy-cli is not installed: pip install comfy-cli (or set COMFY_CLI=/path/to/comfy) to validate "
                    "pyproject.toml")
    env = _clean_env(str(upload.parent.parent / "home"))
    env.update(DO_NOT_TRACK="1", COMFY_NO_TELEMETRY="1", NO_COLOR="1", TERM="dumb", COLUMNS="200")
    done = subprocess.run(command + ["--skip-prompt", "--no-enable-telemetry", "node", "validate"], cwd=upload,
                          env=env, capture_output=True, text=True, timeout=120)
    out = done.stdout + done.stderr
    assert done.returncode == 0, out
    config, _, security = out.partition("Running security checks")
    assert "Validating node configuration" in config and security, out
    complaints = [line for line in config.splitlines() if re.search(r"warning|error", line, re.I)]
    assert not complaints, "pyproject.toml:\n" + "\n".join(complaints)
    codes = re.findall(r"\b(S102|S307|E702)\b", security)
    assert not {"S102", "S307"} & set(codes), security
    if "E702" in codes:
        warnings.warn("comfy node validate warns E702 (several statements on one line), soon an error")

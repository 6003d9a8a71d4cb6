"""The Docker image (docker/Dockerfile) cannot be built here; what can go wrong without a build is checked: every
file it copies exists in the repository, its entry point's commands are the ones README documents and the ones
``__main__.py`` dispatches, and the entry point is valid shell."""
import os
import re
import shlex
import subprocess

from conftest import ROOT

DOCKERFILE = os.path.join(ROOT, "docker", "Dockerfile")
ENTRYPOINT = os.path.join(ROOT, "docker", "entrypoint.sh")


def copied_sources():
    out = []
    with open(DOCKERFILE) as f:
        for line in f:
            if line.startswith("COPY "):
                parts = shlex.split(line[len("COPY "):])
                out += [p for p in parts[:-1] if not p.startswith("--")]
    return out


def entry_commands():
    text = open(ENTRYPOINT).read()
    body = text[text.index('case "$command" in'):text.index("esac")]
    names = re.findall(r"^\s+([a-z|-]+)\)", body, flags=re.M)
    return {n for group in names for n in group.split("|") if n not in ("-h", "--help", "help")}


def test_every_file_the_image_copies_exists():
    sources = copied_sources()
    assert "pipeline" in sources and "requirements-ray.txt" in sources and "docker/entrypoint.sh" in sources
    for src in sources:
        assert os.path.exists(os.path.join(ROOT, src)), f"docker/Dockerfile copies {src}, which is not in the repo"
    # everything the pack imports at run time is in the image
    for name in ("__init__.py", "__main__.py", "cli.py", "batch_cli.py", "avatar_cli.py", "models", "nodes",
                 "pipeline", "server"):
        assert name in sources, name


def test_entry_point_commands_are_documented_and_dispatched():
    commands = entry_commands()
    assert commands == {"dub", "batch", "serve", "avatar", "ray-worker", "ray-head"}
    readme = open(os.path.join(ROOT, "README.md")).read()
    section = readme[readme.index("## Docker and Ray"):]
    section = section[:section.index("\n## ", 4)]
    for command in commands:
        assert f"musetalk-enhanced {command}" in section, f"README's Docker section does not show {command}"
    main = open(os.path.join(ROOT, "__main__.py")).read()
    for command in ("batch", "serve", "avatar"):
        assert f'command == "{command}"' in main
    assert subprocess.run(["bash", "-n", ENTRYPOINT]).returncode == 0
    assert os.access(ENTRYPOINT, os.X_OK)

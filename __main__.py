"""``python <pack folder> ...`` or ``python -m musetalk_enhanced ...``: the command-line lip-sync (see cli.py)."""
import importlib.util
import os
import sys

if __package__:  # python -m <package>
    from .cli import main
else:  # python <pack folder>: import the folder as a package first (relative imports inside)
    _root = os.path.dirname(os.path.abspath(__file__))
    if sys.path and os.path.abspath(sys.path[0]) == _root:
        sys.path.pop(0)  # never shadow other modules with the pack's own folders (nodes, models...)
    _spec = importlib.util.spec_from_file_location("musetalk_enhanced", os.path.join(_root, "__init__.py"),
                                                   submodule_search_locations=[_root])
    _pack = importlib.util.module_from_spec(_spec)
    sys.modules["musetalk_enhanced"] = _pack
    _spec.loader.exec_module(_pack)
    from musetalk_enhanced.cli import main

if __name__ == "__main__":
    sys.exit(main())

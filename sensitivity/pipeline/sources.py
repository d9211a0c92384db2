"""Which library files a workflow script runs: its imports of the package, followed transitively.

The rules list these as inputs so that editing library code reruns exactly the jobs whose code changed, from the
imports themselves rather than a hand-kept list that drifts.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = "sensitivity"


def imported_sources(script: str | Path, package_root: str | Path) -> list[Path]:
    """The package's source files that ``script`` imports, directly or through other package modules, with the
    ``__init__.py`` of every package on the way (Python runs them too); sorted. ``package_root`` is the
    package's folder (``.../sensitivity``)."""
    root = Path(package_root)
    found: set[Path] = set()
    pending = [Path(script)]
    while pending:
        path = pending.pop()
        module = _module_of(path, root)
        for name in _imported_modules(path, module):
            for source in _sources_of(name, root):
                if source not in found:
                    found.add(source)
                    pending.append(source)
    return sorted(found)


def _module_of(path: Path, root: Path) -> list[str] | None:
    """The dotted module path (as parts) of a file inside the package, None outside it."""
    try:
        relative = path.resolve().relative_to(root.resolve().parent)
    except ValueError:
        return None
    parts = list(relative.with_suffix("").parts)
    return parts[:-1] if parts[-1] == "__init__" else parts


def _imported_modules(path: Path, module: list[str] | None) -> list[list[str]]:
    """Every module (and imported name, which may be a submodule) that ``path`` imports, as parts."""
    names = []
    is_package = path.name == "__init__.py"
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names += [alias.name.split(".") for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: from the importing module's package
                if module is None:
                    continue
                base = module if is_package else module[:-1]
                base = base[:len(base) - (node.level - 1)]
            else:
                base = []
            parent = base + (node.module.split(".") if node.module else [])
            names += [parent] + [parent + [alias.name] for alias in node.names]
    return [name for name in names if name and name[0] == PACKAGE]


def _sources_of(name: list[str], root: Path) -> list[Path]:
    """The files importing ``name`` runs: each enclosing package's ``__init__.py`` and the module itself."""
    sources = []
    for depth in range(1, len(name) + 1):
        folder = root.parent.joinpath(*name[:depth])
        if (folder / "__init__.py").is_file():
            sources.append(folder / "__init__.py")
        elif folder.with_suffix(".py").is_file():
            sources.append(folder.with_suffix(".py"))
    return sources

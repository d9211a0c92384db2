"""The library files each rule lists as inputs come from its script's imports, followed through the package."""

from __future__ import annotations

from pathlib import Path

from sensitivity.pipeline.sources import imported_sources

REPO = Path(__file__).resolve().parents[1]


def test_imports_are_followed_through_modules_relative_imports_and_package_inits(tmp_path) -> None:
    package = tmp_path / "sensitivity"
    (package / "sub").mkdir(parents=True)
    files = {
        "__init__.py": "",
        "a.py": "from sensitivity.sub import b\nimport numpy\n",
        "sub/__init__.py": "from .c import thing\n",
        "sub/b.py": "from ..d import x\n",
        "sub/c.py": "thing = 1\n",
        "d.py": "x = 2\n",
        "unused.py": "",
    }
    for name, text in files.items():
        (package / name).write_text(text)
    script = tmp_path / "script.py"
    script.write_text("import sys\nfrom sensitivity.a import y  # noqa\n")
    found = [path.relative_to(package).as_posix() for path in imported_sources(script, package)]
    assert found == ["__init__.py", "a.py", "d.py", "sub/__init__.py", "sub/b.py", "sub/c.py"]


def sources(script: str) -> set[str]:
    package = REPO / "sensitivity"
    return {path.relative_to(package).as_posix()
            for path in imported_sources(REPO / "workflow" / "scripts" / script, package)}


def test_the_fit_rule_lists_the_regression_modules_and_extraction_does_not() -> None:
    fit, extract = sources("fit.py"), sources("extract.py")
    # the hand-kept list of the fit rule had missed the modules that came later (shape, normal equations, robust)
    assert {"pipeline/fit.py", "regress.py", "normal_equations.py", "robust.py", "shape.py", "box_model.py"} <= fit
    assert {"pipeline/extract.py", "maps.py", "map_methods.py", "models.py", "store.py"} <= extract
    # editing the box regression reruns the fit, never the (long) extraction
    assert not {"regress.py", "robust.py", "pipeline/fit.py"} & extract
    assert "maps.py" not in fit

"""One direction of imports between the four top-level packages (issue 13): camera, web and firmware_config
use badge_bridge; badge_bridge never imports them, not even inside a function or for type checking.

Read from the source (every import statement anywhere in a file, and importlib.import_module or __import__
of a literal name), so an import that only runs on some path is caught as surely as one at the top.
"""

from __future__ import annotations

import ast
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

ALLOWED: dict[str, frozenset[str]] = {
    "badge_bridge": frozenset(),
    "camera": frozenset({"badge_bridge"}),
    "firmware_config": frozenset({"badge_bridge"}),
    "web": frozenset({"badge_bridge", "camera"}),
}
"""The other top-level packages each package may import (its own always)."""


def rule(package: str) -> str:
    others = sorted(set(ALLOWED) - {package})
    allowed = sorted(ALLOWED[package])
    if not allowed:
        return f"{package} imports none of {', '.join(others)}"
    return f"{package} imports only {' and '.join(allowed)} (and itself)"


def imported(tree: ast.AST) -> Iterator[tuple[int, str]]:
    """(line, absolute module name) of every import in the tree; relative imports stay in their package and
    are skipped."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            yield node.lineno, node.module
        elif (isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant)
              and isinstance(node.args[0].value, str)
              and ((isinstance(node.func, ast.Name) and node.func.id in ("__import__", "import_module"))
                   or (isinstance(node.func, ast.Attribute) and node.func.attr == "import_module"))):
            yield node.lineno, node.args[0].value


def violations(package: str, where: str, source: str) -> list[str]:
    """Each import in ``source`` (a file of ``package``, shown as ``where``) that breaks its rule."""
    found = []
    for line, module in imported(ast.parse(source, filename=where)):
        target = module.partition(".")[0]
        if target in ALLOWED and target != package and target not in ALLOWED[package]:
            found.append(f"{where}:{line}: imports {module}, but {rule(package)}")
    return found


def sources() -> Iterator[tuple[str, Path]]:
    for package in ALLOWED:
        for path in sorted((ROOT / package).rglob("*.py")):
            yield package, path


def test_the_four_packages_import_in_one_direction() -> None:
    found = [v for package, path in sources()
             for v in violations(package, str(path.relative_to(ROOT)), path.read_text(encoding="utf-8"))]
    assert not found, "imports against the package rules:\n" + "\n".join(found)


def test_the_rules_cover_every_installed_package() -> None:
    find = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]["find"]
    assert {pattern.removesuffix("*") for pattern in find["include"]} == set(ALLOWED)
    for package in ALLOWED:
        assert (ROOT / package / "__init__.py").is_file(), f"{package} is not where the rules look for it"


@pytest.mark.parametrize(("package", "source", "line", "module"), [
    ("badge_bridge", "import camera.faces\n", 1, "camera.faces"),
    ("badge_bridge", "import numpy as np\nfrom web import create_app\n", 2, "web"),
    ("badge_bridge", "def run():\n    from firmware_config.cli import firmware\n", 2, "firmware_config.cli"),
    ("badge_bridge", "import typing\nif typing.TYPE_CHECKING:\n    from camera.evidence import EvidenceStore\n", 3,
     "camera.evidence"),
    ("badge_bridge", "import importlib\nimportlib.import_module('web.cli')\n", 2, "web.cli"),
    ("badge_bridge", "class A:\n    def f(self):\n        __import__('camera')\n", 3, "camera"),
    ("camera", "from web.evidence import store\n", 1, "web.evidence"),
    ("camera", "try:\n    import firmware_config\nexcept ImportError:\n    pass\n", 2, "firmware_config"),
    ("firmware_config", "import camera.supervisor as s\n", 1, "camera.supervisor"),
    ("web", "from firmware_config.validate import load_firmware\n", 1, "firmware_config.validate"),
])
def test_a_forbidden_import_is_named_with_its_line_and_rule(package: str, source: str, line: int,
                                                            module: str) -> None:
    where = f"{package}/example.py"
    assert violations(package, where, source) == [f"{where}:{line}: imports {module}, but {rule(package)}"]


@pytest.mark.parametrize(("package", "source"), [
    ("badge_bridge", "from badge_bridge.cli import main\nfrom . import people\nfrom .faces import x\n"),
    ("badge_bridge", "import webbrowser\nimport camera_tools\nfrom firmware_configs import x\n"),
    ("camera", "from badge_bridge.face_match import Gallery\nimport camera.faces\n"),
    ("firmware_config", "from badge_bridge.firmware.validate import load_firmware\n"),
    ("web", "from camera.evidence import EvidenceStore\nfrom badge_bridge import people\nimport web.services\n"),
])
def test_allowed_imports_pass(package: str, source: str) -> None:
    assert violations(package, f"{package}/example.py", source) == []


def test_the_rules_as_the_closing_note_lists_them() -> None:
    assert [rule(p) for p in ALLOWED] == [
        "badge_bridge imports none of camera, firmware_config, web",
        "camera imports only badge_bridge (and itself)",
        "firmware_config imports only badge_bridge (and itself)",
        "web imports only badge_bridge and camera (and itself)",
    ]

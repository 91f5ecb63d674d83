"""The layering in DESIGN.md: db/study/alignment never pull in streamlit; nothing imports app/."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FORBIDDEN = {
    "db": {"study", "alignment", "app", "streamlit"},
    "alignment": {"db", "study", "app", "streamlit"},
    "study": {"alignment", "app", "streamlit"},
}


def _imported_top_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def test_packages_import_only_what_their_layer_allows():
    violations = []
    for package, forbidden in FORBIDDEN.items():
        for path in (ROOT / package).rglob("*.py"):
            bad = _imported_top_modules(path) & forbidden
            if bad:
                violations.append(f"{path.relative_to(ROOT)} imports {sorted(bad)}")
    assert violations == []


def test_importing_the_core_packages_never_imports_streamlit():
    code = ("import sys, pkgutil, importlib\n"
            "for pkg in ('db', 'study', 'alignment'):\n"
            "    mod = importlib.import_module(pkg)\n"
            "    for info in pkgutil.walk_packages(mod.__path__, pkg + '.'):\n"
            "        if '.migrations' not in info.name: importlib.import_module(info.name)\n"
            "print('streamlit' in sys.modules)\n")
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"

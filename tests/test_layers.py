"""The layering in ARCHITECTURE.md, enforced.

app/ (delivery: Streamlit pages, participant page, CLI) -> workflows/ (no Streamlit) -> study/ -> db/ ->
common/; alignment/ and db/ import only common/ from the project; common/ (config loader, atomic writes, the
data directory) imports no project code, no Streamlit and no torch; nothing imports app/; only app/ imports
Streamlit; app/ runs no query (no sqlalchemy); tests/support/ is shared by tests and benches and is never
imported by shipped code.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FORBIDDEN = {
    "common": {"db", "study", "alignment", "workflows", "app", "tests", "streamlit", "torch"},
    "db": {"study", "alignment", "workflows", "app", "tests", "streamlit"},
    "alignment": {"db", "study", "workflows", "app", "tests", "streamlit"},
    "study": {"alignment", "workflows", "app", "tests", "streamlit"},
    "workflows": {"app", "tests", "streamlit"},
    "app": {"tests", "sqlalchemy"},  # delivery only: queries live in study/ and workflows/
    "bench": {"app.views"},
}


def _imported_modules(path: Path) -> set[str]:
    """Every absolute module an import statement names, with each dotted prefix ("a.b.c" -> a, a.b, a.b.c)."""
    tree = ast.parse(path.read_text())
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            modules = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            modules = [node.module]
        else:
            continue
        for module in modules:
            parts = module.split(".")
            names |= {".".join(parts[: i + 1]) for i in range(len(parts))}
    return names


def _violations(package: str, forbidden: set[str]) -> list[str]:
    found = []
    for path in sorted((ROOT / package).rglob("*.py")):
        bad = _imported_modules(path) & forbidden
        if bad:
            found.append(f"{path.relative_to(ROOT)} imports {sorted(bad)}")
    return found


def test_packages_import_only_what_their_layer_allows():
    violations = [v for package, forbidden in FORBIDDEN.items() for v in _violations(package, forbidden)]
    assert violations == []


def test_the_checker_sees_a_forbidden_import(tmp_path, monkeypatch):
    """Guard against a checker that silently passes: a planted streamlit import in workflows/ is reported."""
    (tmp_path / "workflows").mkdir()
    (tmp_path / "workflows" / "bad.py").write_text("import os\nfrom streamlit import session_state\n")
    monkeypatch.setattr(sys.modules[__name__], "ROOT", tmp_path)
    assert _violations("workflows", FORBIDDEN["workflows"]) == ["workflows/bad.py imports ['streamlit']"]


def test_only_app_modules_that_draw_import_streamlit():
    """Within app/, Streamlit belongs to pages, the participant page and their helpers, never to the CLI."""
    assert _violations("app/cli", {"streamlit"}) == []


def test_importing_everything_but_app_never_imports_streamlit():
    code = (
        "import sys, pkgutil, importlib\n"
        "for pkg in ('common', 'db', 'study', 'alignment', 'workflows'):\n"
        "    mod = importlib.import_module(pkg)\n"
        "    for info in pkgutil.walk_packages(mod.__path__, pkg + '.'):\n"
        "        if '.migrations' not in info.name: importlib.import_module(info.name)\n"
        "print('streamlit' in sys.modules)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "False"

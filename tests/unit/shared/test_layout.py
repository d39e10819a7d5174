"""The source tree keeps its shape: who may import whom, and modules a reader can take in whole."""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Final

import pytest

ROOT: Final = Path(__file__).resolve().parents[3]
PACKAGES: Final = ("engine_hub", "admin_gateway", "shared")
#: Lines of code a module may hold (docstrings, comments and blank lines not counted): past it,
#: split the module by concern (docs/development.md).
MAX_CODE_LINES: Final = 400

#: What each package (and subpackage) may import of ours, besides itself and ``shared``'s top level.
#: It is the rule each package's ``__init__`` docstring states; the most specific prefix applies.
MAY_IMPORT: Final[dict[str, frozenset[str]]] = {
    "shared": frozenset({"shared"}),
    "engine_hub": frozenset({"engine_hub", "shared"}),
    "engine_hub.store": frozenset(
        {"engine_hub.store", "engine_hub.errors", "engine_hub.settings", "engine_hub.metrics", "shared"}
    ),
    # log_retention sweeps through the job service (the one that writes log_expired records).
    "engine_hub.run": frozenset(
        {
            "engine_hub.run",
            "engine_hub.errors",
            "engine_hub.settings",
            "engine_hub.metrics",
            "engine_hub.jobs",
            "engine_hub.store",
            "shared",
        }
    ),
    "engine_hub.jobs": frozenset(
        {
            "engine_hub.jobs",
            "engine_hub.errors",
            "engine_hub.settings",
            "engine_hub.metrics",
            "engine_hub.store",
            "engine_hub.run",
            "shared",
        }
    ),
    "admin_gateway": frozenset({"admin_gateway", "shared"}),
    "admin_gateway.audit": frozenset(
        {
            "admin_gateway.audit",
            "admin_gateway.errors",
            "admin_gateway.settings",
            "admin_gateway.peer",
            "admin_gateway.engine_client",
            "shared",
        }
    ),
    "admin_gateway.auth": frozenset(
        {
            "admin_gateway.auth",
            "admin_gateway.audit",
            "admin_gateway.errors",
            "admin_gateway.settings",
            "admin_gateway.peer",
            "admin_gateway.engine_client",
            "shared",
        }
    ),
}


def modules() -> list[Path]:
    """Every module of the three packages."""
    return sorted(p for package in PACKAGES for p in (ROOT / package).rglob("*.py"))


def module_name(path: Path) -> str:
    """``engine_hub/store/embedded.py`` -> ``engine_hub.store.embedded``."""
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def our_imports(path: Path) -> set[str]:
    """Every module of ours that ``path`` imports, at any depth (functions and TYPE_CHECKING included)."""
    found: set[str] = set()
    package = module_name(path) if path.name == "__init__.py" else module_name(path).rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            found.add(base)
    return {name for name in found if name.split(".")[0] in PACKAGES}


def rule_for(name: str) -> tuple[str, frozenset[str]]:
    """The most specific entry of :data:`MAY_IMPORT` that covers module ``name``."""
    prefix = max((p for p in MAY_IMPORT if name == p or name.startswith(p + ".")), key=len)
    return prefix, MAY_IMPORT[prefix]


def allowed(target: str, rule: frozenset[str]) -> bool:
    """Whether ``target`` falls under one of ``rule``'s prefixes."""
    return any(target == p or target.startswith(p + ".") for p in rule)


def code_lines(path: Path) -> int:
    """Lines of ``path`` that are code: not blank, not a comment, not part of a docstring."""
    source = path.read_text(encoding="utf-8")
    docstring_lines: set[int] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            first = node.body[0] if node.body else None
            if (
                isinstance(first, ast.Expr)
                and isinstance(first.value, ast.Constant)
                and isinstance(first.value.value, str)
            ):
                docstring_lines.update(range(first.lineno, (first.end_lineno or first.lineno) + 1))
    return sum(
        1
        for number, line in enumerate(source.splitlines(), 1)
        if line.strip() and not line.strip().startswith("#") and number not in docstring_lines
    )


class TestImportBoundaries:
    """The engine and the gateway never import each other; shared/ imports neither; subpackages keep their layer."""

    def test_processes_stay_apart(self) -> None:
        """No engine module imports the gateway or the reverse, and shared/ imports neither process."""
        crossings = []
        for path in modules():
            name = module_name(path)
            top = name.split(".")[0]
            for target in our_imports(path):
                other = target.split(".")[0]
                if other not in {top, "shared"}:
                    crossings.append(f"{name} imports {target}")
        assert not crossings, "\n".join(crossings)

    def test_subpackages_keep_their_layer(self) -> None:
        """Each subpackage imports only what its ``__init__`` docstring allows (e.g. the store never imports HTTP)."""
        breaches: list[str] = []
        for path in modules():
            name = module_name(path)
            prefix, rule = rule_for(name)
            breaches.extend(
                f"{name} imports {target} (rule of {prefix})"
                for target in sorted(our_imports(path))
                if not allowed(target, rule)
            )
        assert not breaches, "\n".join(breaches)

    def test_the_checker_sees_a_crossing(self, tmp_path: Path) -> None:
        """The import reader finds absolute, relative and function-level imports (the check can fail)."""
        probe = ROOT / "engine_hub" / "store" / "probe_for_layout_test.py"
        probe.write_text(
            "from __future__ import annotations\n"
            "from ..http import app\n"
            "def f() -> None:\n"
            "    import admin_gateway.settings\n"
        )
        try:
            found = our_imports(probe)
        finally:
            probe.unlink()
        assert found == {"engine_hub.http", "admin_gateway.settings"}
        assert not allowed("engine_hub.http", rule_for("engine_hub.store.probe_for_layout_test")[1])

    @pytest.mark.parametrize("package", sorted({module_name(p) for p in modules() if p.name == "__init__.py"}))
    def test_each_package_says_what_it_holds_and_may_import(self, package: str) -> None:
        """Every package's ``__init__`` docstring states its contents and, for subpackages, what it may import."""
        path = ROOT / package.replace(".", "/") / "__init__.py"
        doc = ast.get_docstring(ast.parse(path.read_text(encoding="utf-8"))) or ""
        assert doc, f"{package}/__init__.py has no docstring"
        assert "may import" in doc.lower(), f"{package}/__init__.py does not say what it may import"


class TestModuleSize:
    """A module holds one concern: no more than about 400 lines of code."""

    def test_no_module_passes_the_limit(self) -> None:
        """Every module has at most MAX_CODE_LINES lines of code (docstrings and comments not counted)."""
        big = {module_name(p): n for p in modules() if (n := code_lines(p)) > MAX_CODE_LINES}
        assert not big, f"split these modules by concern (docs/development.md): {big}"

    def test_counting_skips_docstrings_and_comments(self, tmp_path: Path) -> None:
        """Docstrings, comments and blank lines are not code; statements are."""
        sample = tmp_path / "sample.py"
        sample.write_text(
            '"""Doc.\n\nMore doc.\n"""\n\n# why\nx = 1\n\n\ndef f() -> int:\n    """Doc."""\n    return x\n'
        )
        assert code_lines(sample) == 3

"""The catalog split in three modules (model, demo types, file loader) serves the same demo catalog as before."""

from __future__ import annotations

import ast
import sys
from pathlib import Path
from typing import Any, Final

from engine_hub.jobs import catalog, catalog_file, demo_types
from engine_hub.jobs.catalog import Catalog
from engine_hub.jobs.catalog_file import load_catalog
from engine_hub.jobs.demo_types import builtin_catalog

JOBS_DIR: Final = Path(catalog.__file__).parent

#: ``GET /api/types`` for the demo catalog, as the single ``catalog.py`` served it before the split
#: (plus the approval policy of issue 15 and its ``demo.guarded`` type).
DEMO_TYPES_JSON: Final[list[dict[str, Any]]] = [
    {
        "name": "demo.echo",
        "description": "Print a message.",
        "timeout": 30.0,
        "exclusive": False,
        "plan": True,
        "params": [
            {
                "name": "message",
                "type": "str",
                "required": False,
                "default": "hello",
                "choices": None,
                "description": "The message to print.",
                "maxLength": 4096,
            }
        ],
        "approval": "none",
        "approvers": 0,
    },
    {
        "name": "demo.fail",
        "description": "Print an error on stderr and exit non-zero.",
        "timeout": 30.0,
        "exclusive": False,
        "plan": False,
        "params": [
            {
                "name": "code",
                "type": "int",
                "required": False,
                "default": 1,
                "choices": None,
                "description": "The exit code to fail with.",
                "min": 1,
                "max": 125,
            }
        ],
        "approval": "none",
        "approvers": 0,
    },
    {
        "name": "demo.guarded",
        "description": "Print a message, once a second person has approved the run (two-person rule).",
        "timeout": 30.0,
        "exclusive": False,
        "plan": True,
        "params": [
            {
                "name": "message",
                "type": "str",
                "required": False,
                "default": "approved",
                "choices": None,
                "description": "The message to print.",
                "maxLength": 4096,
            }
        ],
        "approval": "required",
        "approvers": 1,
    },
    {
        "name": "demo.sleep",
        "description": "Sleep for a number of seconds, printing a line every second.",
        "timeout": 3660.0,
        "exclusive": False,
        "plan": True,
        "params": [
            {
                "name": "seconds",
                "type": "int",
                "required": False,
                "default": 3,
                "choices": None,
                "description": "How long to sleep, in seconds.",
                "min": 0,
                "max": 3600,
            }
        ],
        "approval": "none",
        "approvers": 0,
    },
]


def _imported_modules(module: object) -> set[str]:
    """Return the modules ``module``'s source imports from (top-level ``import``/``from`` statements)."""
    tree = ast.parse(Path(str(getattr(module, "__file__", ""))).read_text(encoding="utf-8"))
    names: set[str] = set()
    for node in tree.body:
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


class TestDemoCatalog:
    def test_builtin_catalog_serves_the_same_types_as_before_the_split(self) -> None:
        """builtin_catalog() serves exactly the demo types the single catalog module served."""
        assert builtin_catalog().to_json() == DEMO_TYPES_JSON

    def test_no_file_loads_the_builtin_catalog(self) -> None:
        """load_catalog(None) is the demo catalog, with no client tokens."""
        loaded = load_catalog(None)
        assert loaded == builtin_catalog()
        assert loaded.clients == ()

    def test_include_demo_loads_the_same_demo_types(self, tmp_path: Path) -> None:
        """A file with only ``include_demo = true`` offers the very types of the built-in catalog."""
        path = tmp_path / "catalog.toml"
        path.write_text("include_demo = true\n", encoding="utf-8")
        assert load_catalog(path) == builtin_catalog()

    def test_demo_commands_run_the_demo_script_with_this_interpreter(self) -> None:
        """Each demo type runs engine_hub/jobs/demo.py in isolated mode with this interpreter."""
        for job_type in demo_types.demo_types():
            python, isolated, script, program = job_type.command
            assert python == sys.executable and isolated == "-I"
            assert Path(script) == JOBS_DIR / "demo.py" and Path(script).is_file()
            assert job_type.name == f"demo.{program}"

    def test_mapping_fields_are_read_only(self) -> None:
        """The one converter freezes both a type's env and a catalog's types."""
        cat = builtin_catalog()
        assert isinstance(cat, Catalog)
        for frozen in (cat.types, next(iter(cat.types.values())).env):
            assert not hasattr(frozen, "__setitem__")


class TestModuleRoles:
    def test_the_model_neither_parses_toml_nor_knows_the_demos(self) -> None:
        """catalog.py is the model only: no TOML, no demo types, no loader names."""
        assert "tomllib" not in _imported_modules(catalog)
        for name in ("load_catalog", "parse_catalog", "demo_types", "builtin_catalog"):
            assert not hasattr(catalog, name), name

    def test_the_loader_builds_on_the_model_and_the_demo_types(self) -> None:
        """catalog_file.py imports the model and the demo types, and the demo types import only the model."""
        assert {"engine_hub.jobs.catalog", "engine_hub.jobs.demo_types"} <= _imported_modules(catalog_file)
        ours = {m for m in _imported_modules(demo_types) if m.startswith("engine_hub")}
        assert ours == {"engine_hub.jobs.catalog"}

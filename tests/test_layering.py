"""The studio's layers, read from its source (ast: nothing is imported, nothing runs).

- Routes (studio/api/) and the UI (studio/ui/) call services: never the task store's module or its
  folders, the task runner's internals, or a training service's internals (its dataset functions,
  workspace layout and backends).
- A UI tab does not import another tab: what tabs share lives in studio/ui/common.py.
- The REST API and the UI are siblings: neither imports the other.
"""

from __future__ import annotations

import ast
from collections.abc import Callable
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
STUDIO = ROOT / "studio"
MUST_NOT_IMPORT = (
    "studio.tasks.store",
    "studio.tasks.runner",
    "studio.services.training.dataset",
    "studio.services.training.common",
    "studio.services.training.piper_backend",
)
# What a route or a tab must not do with the studio it is given (the store's folders, a workspace).
MUST_NOT_CALL = (".store.folder(", "Workspace(")


def module_name(path: Path) -> str:
    """`studio/api/routes_tasks.py` -> `studio.api.routes_tasks`; a package's __init__ is the package."""
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path) -> dict[str, set[str]]:
    """Every module the file imports, anywhere in it (functions and TYPE_CHECKING blocks included),
    each with the import statements that name it. `from a.b import c` names both `a.b` and `a.b.c`
    (c may be a module)."""
    package = module_name(path) if path.name == "__init__.py" else module_name(path).rpartition(".")[0]
    found: dict[str, set[str]] = {}
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                found.setdefault(alias.name, set()).add(f"line {node.lineno}: import {alias.name}")
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = package.split(".")
                base = parts[: len(parts) - node.level + 1]
                module = ".".join([*base, node.module] if node.module else base)
            else:
                module = node.module or ""
            for alias in node.names:
                statement = (
                    f"line {node.lineno}: from {'.' * node.level}{node.module or ''} import {alias.name}"
                )
                found.setdefault(module, set()).add(statement)
                found.setdefault(f"{module}.{alias.name}", set()).add(statement)
    return found


PATHS = {module_name(path): path for path in sorted(STUDIO.rglob("*.py"))}
MODULES = {module: imports(path) for module, path in PATHS.items()}


def within(module: str, package: str) -> bool:
    """Whether `module` is `package` or in it."""
    return module == package or module.startswith(package + ".")


def is_tab(module: str) -> bool:
    """Whether `module` is a UI tab (studio.ui.<name>_tab)."""
    return within(module, "studio.ui") and module.count(".") == 2 and module.endswith("_tab")


def offending(importer: str, banned: Callable[[str], bool]) -> str:
    """The import statements of `importer` that name a module `banned` says it must not import."""
    statements = sorted(
        {statement for name, found in MODULES[importer].items() if banned(name) for statement in found}
    )
    return "; ".join(f"{importer} ({statement})" for statement in statements)


def test_the_walk_sees_the_studio() -> None:
    assert "studio.api.routes_training" in MODULES and "studio.ui" in MODULES
    assert "studio.api.routes_tasks.owned_task" in MODULES["studio.api.routes_training"]
    assert "studio.tasks.store" in MODULES["studio.core"]  # the walk finds what core wires together


FRONT_ENDS = sorted(m for m in MODULES if within(m, "studio.api") or within(m, "studio.ui"))


@pytest.mark.parametrize("module", FRONT_ENDS)
def test_routes_and_tabs_reach_no_store_and_no_service_internals(module: str) -> None:
    found = offending(module, lambda name: any(within(name, banned) for banned in MUST_NOT_IMPORT))
    assert not found, f"routes and tabs call services, not the store or a service's internals: {found}"
    source = PATHS[module].read_text(encoding="utf-8")
    calls = [call for call in MUST_NOT_CALL if call in source]
    assert not calls, f"{module} reaches past the services with {calls}: add a service method for it"


@pytest.mark.parametrize("module", sorted(m for m in MODULES if within(m, "studio.ui") and m != "studio.ui"))
def test_no_tab_imports_another_tab(module: str) -> None:
    """`studio.ui` itself assembles the tabs; every other UI module shares through studio.ui.common."""
    found = offending(module, lambda name: is_tab(name) and name != module)
    assert not found, f"a tab imports another tab (move what they share into studio/ui/common.py): {found}"


@pytest.mark.parametrize("module", FRONT_ENDS)
def test_api_and_ui_stay_apart(module: str) -> None:
    other = "studio.ui" if within(module, "studio.api") else "studio.api"
    found = offending(module, lambda name: within(name, other))
    assert not found, f"the REST API and the UI share through services, never each other: {found}"

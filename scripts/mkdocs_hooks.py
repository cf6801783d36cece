"""MkDocs hooks for ravine's documentation site (`make docs`; mkdocs.yml names this file).

Two jobs, so that adding a module or a docs page never means editing mkdocs.yml first:

* the API reference is one generated page per public module under ``src/ravine`` (a
  ``::: module`` directive that mkdocstrings renders from the docstrings), listed in the nav
  under "API reference" by package;
* nav entries whose page does not exist yet are dropped (helpers write their pages in parallel),
  and pages that exist but are in no nav entry are appended under "More", so the strict build
  neither fails on a missing page nor hides a new one.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mkdocs.structure.files import File, Files

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "src" / "ravine"
API_DIR = "api"
# Argument parsing and process entry points: documented by `ravine COMMAND --help` and
# docs/cli.md, not as an API.
SKIPPED = ("ravine.cli", "ravine.__main__")


def public_modules() -> list[str]:
    """Dotted names of ravine's modules and packages, none private, in a stable order."""
    names = []
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        name = ".".join(parts)
        if any(part.startswith("_") for part in parts) or name.startswith(SKIPPED):
            continue
        names.append(name)
    return sorted(set(names), key=lambda n: (n.count(".") > 0, n.split(".")[:-1], n))


def _page(module: str) -> str:
    return f"{API_DIR}/{module}.md"


def _is_package(module: str) -> bool:
    return (PACKAGE.parent / module.replace(".", "/") / "__init__.py").exists()


def _api_nav(modules: list[str]) -> list[Any]:
    """[{"ravine": page}, {"ravine.optim": [its modules...]}, ...]: one section per package."""
    nav: list[Any] = []
    sections: dict[str, list[Any]] = {}
    for module in modules:
        package = module if _is_package(module) else module.rsplit(".", 1)[0]
        if module == "ravine" or package == "ravine":
            nav.append({module: _page(module)})
            continue
        if package not in sections:
            sections[package] = []
            nav.append({package: sections[package]})
        sections[package].append({module: _page(module)})
    return nav


def _nav_pages(nav: Any) -> list[str]:
    if isinstance(nav, str):
        return [nav]
    if isinstance(nav, dict):
        return [page for value in nav.values() for page in _nav_pages(value)]
    if isinstance(nav, list):
        return [page for item in nav for page in _nav_pages(item)]
    return []


def _prune(nav: Any, docs_dir: Path) -> Any:
    """nav without the entries whose Markdown page is not in docs_dir (external links stay)."""
    if isinstance(nav, str):
        keep = "://" in nav or not nav.endswith(".md") or (docs_dir / nav).exists()
        return nav if keep else None
    if isinstance(nav, dict):
        pruned = {key: _prune(value, docs_dir) for key, value in nav.items()}
        pruned = {key: value for key, value in pruned.items() if value not in (None, [])}
        return pruned or None
    if isinstance(nav, list):
        items = [_prune(item, docs_dir) for item in nav]
        return [item for item in items if item not in (None, [])]
    return nav


def on_config(config: Any) -> Any:
    docs_dir = Path(config["docs_dir"])
    nav = _prune(config["nav"] or [], docs_dir)
    listed = set(_nav_pages(nav))
    extra = sorted(
        str(path.relative_to(docs_dir))
        for path in docs_dir.rglob("*.md")
        if str(path.relative_to(docs_dir)) not in listed
        and not path.relative_to(docs_dir).parts[0].startswith((API_DIR, "_"))
    )
    if extra:
        nav.append({"More": extra})
    nav.append({"API reference": _api_nav(public_modules())})
    config["nav"] = nav
    return config


def on_files(files: Files, config: Any) -> Files:
    for module in public_modules():
        options = "\n    options:\n      members: false\n" if _is_package(module) else "\n"
        content = f"# `{module}`\n\n::: {module}{options}"
        files.append(File.generated(config, _page(module), content=content))
    return files

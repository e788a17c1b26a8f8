"""The layering of ARCHITECTURE.md, as import-linter contracts in pyproject.toml (run by `make test`'s lint step):
that they cover every module, and that a wrong import fails them by name."""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("base", "edge", "shell", "console", "market", "workers", "qualification", "aggregation", "payments",
            "platforms")
DOMAINS = ("market", "workers", "qualification", "aggregation", "payments", "platforms")
# Modules of a domain that face HTTP or run jobs in the app's context: they may import flask and the edge.
EDGE_FACING = {"api", "views", "schemas", "jobs", "evaluation"}


def _contracts() -> dict[str, dict]:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]
    return {c["name"]: c for c in config["contracts"]}


def _modules(package: str) -> list[str]:
    return sorted(".".join(p.relative_to(ROOT).with_suffix("").parts) for p in (ROOT / package).rglob("*.py")
                  if p.name != "__init__.py")


def test_every_domain_module_that_is_not_edge_facing_is_kept_off_the_web_framework():
    [services] = [c for name, c in _contracts().items() if name.startswith("Domain services and models")]
    listed = set(services["source_modules"])
    domain = [m for package in DOMAINS for m in _modules(package)]
    assert not [m for m in domain if m.rsplit(".", 1)[1] not in EDGE_FACING and m not in listed]
    assert not listed - set(domain)  # no stale names either


def test_every_package_is_in_the_layers():
    [layers] = [c for name, c in _contracts().items() if name.startswith("Layers:")]
    named = {p.strip() for layer in layers["layers"] for p in layer.split("|")}
    assert named == set(PACKAGES)


def _lint(tree: Path) -> subprocess.CompletedProcess[str]:
    lint = Path(sys.executable).with_name("lint-imports")
    return subprocess.run([str(lint), "--no-cache"], cwd=tree, capture_output=True, text=True, timeout=120,
                          env={"PYTHONPATH": str(tree), "PATH": "/usr/bin:/bin"})


def test_a_wrong_import_fails_the_contract_that_forbids_it(tmp_path):
    for package in PACKAGES:
        shutil.copytree(ROOT / package, tmp_path / package, ignore=shutil.ignore_patterns("static", "templates"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path)
    assert _lint(tmp_path).returncode == 0
    # The base reaching up into a domain (as market/db.py's neighbours once did), and a service into the edge.
    (tmp_path / "base" / "paging.py").write_text((tmp_path / "base" / "paging.py").read_text()
                                                 + "\nimport workers.models  # noqa\n")
    (tmp_path / "market" / "engine" / "submit.py").write_text(
        (tmp_path / "market" / "engine" / "submit.py").read_text() + "\nimport edge.request  # noqa\n")
    result = _lint(tmp_path)
    assert result.returncode != 0
    assert "Layers: shell, console pages, domains, HTTP edge, base BROKEN" in result.stdout
    assert "Domain services and models never import flask, marshmallow or the edge BROKEN" in result.stdout
    assert "base.paging -> workers.models" in result.stdout


def test_the_models_registry_lists_every_module_that_declares_tables():
    """Alembic and the tests load the metadata from shell/registry.py: a models module missing there would have
    its tables proposed for dropping by autogenerate."""
    from shell.registry import MODEL_MODULES

    declaring = set()
    for package in PACKAGES:
        for module in _modules(package):
            tree = ast.parse((ROOT / (module.replace(".", "/") + ".py")).read_text())
            bases = [b for node in tree.body if isinstance(node, ast.ClassDef) for b in node.bases]
            if any(isinstance(b, ast.Name) and b.id == "Base" for b in bases):
                declaring.add(module)
    assert declaring == set(MODEL_MODULES)

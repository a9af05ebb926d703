"""Dependencies flow one way, read from the import graph of the source (every import, function-level ones too).

The layers, lowest first:
- the core's base: ``mfef_keras/`` outside ``training/`` and ``distill/`` (layers, models, data, student
  directories, file helpers);
- ``mfef_keras/distill/`` (the distiller, its losses and methods), then ``mfef_keras/training/`` (runs), which
  imports it: the distiller never imports the runs;
- ``zoo/`` and ``export/`` (installed as ``mfef_keras.zoo`` and ``mfef_keras.export``), side by side: neither
  imports the other;
- the composition roots, ``cli.py`` (the commands) and ``mfef_keras/__init__.py`` (the Python API), which may
  import every layer. Below them, only ``__version__`` is taken from the package itself.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# Where each importable package lives in the repository (pyproject.toml's package-dir).
PACKAGE_DIRS = {"mfef_keras": ROOT / "mfef_keras", "mfef_keras.zoo": ROOT / "zoo", "mfef_keras.export": ROOT / "export"}
COMPOSITION_ROOTS = {"mfef_keras/__init__.py", "mfef_keras/cli.py"}
UPPER_CORE = ("mfef_keras.training", "mfef_keras.distill")


def _modules() -> dict[str, tuple[str, Path]]:
    """Repository path -> (the module's package, its file), for every module below the composition roots."""
    modules = {}
    for package, folder in PACKAGE_DIRS.items():
        for file in folder.rglob("*.py"):
            name = file.relative_to(ROOT).as_posix()
            if file.is_symlink() or name in COMPOSITION_ROOTS:
                continue
            parts = file.relative_to(folder).parent.parts
            modules[name] = (".".join((package, *parts)), file)
    return modules


def _imports(package: str, file: Path) -> list[tuple[int, str]]:
    """(line, imported name) for each import in ``file``, relative ones made absolute; ``from a import b`` gives a.b.

    ``importlib.import_module`` with a constant name counts too: it is an import the graph must see.
    """
    found = []
    for node in ast.walk(ast.parse(file.read_text(), str(file))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = package.split(".")[: len(package.split(".")) - node.level + 1] if node.level else []
            module = ".".join([*base, *([node.module] if node.module else [])])
            found += [(node.lineno, f"{module}.{alias.name}") for alias in node.names]
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr == "import_module"
            and node.args
            and isinstance(node.args[0], ast.Constant)
        ):
            found.append((node.lineno, str(node.args[0].value)))
    return found


def _within(name: str, package: str) -> bool:
    return name == package or name.startswith(package + ".")


def _facade_name(imported: str) -> str | None:
    """NAME, where ``imported`` is ``mfef_keras.NAME`` and NAME is defined in ``mfef_keras/__init__.py``."""
    package, _, name = imported.partition(".")
    submodules = {path.stem for path in PACKAGE_DIRS["mfef_keras"].iterdir()} | {"zoo", "export"}
    if package != "mfef_keras" or not name or "." in name or name in submodules:
        return None
    return name


def _forbidden(module: str, imported: str) -> str | None:
    """Why ``module`` (a repository path) may not import ``imported``, or None if it may."""
    if _within(imported, "mfef_keras.cli") or _facade_name(imported) not in (None, "__version__"):
        return "the composition roots are imported by nothing below them"
    if module.startswith("mfef_keras/"):
        for upper in ("mfef_keras.zoo", "mfef_keras.export"):
            if _within(imported, upper):
                return "the core never imports the zoo or export; cli.py and mfef_keras/__init__.py compose them"
        if module.startswith("mfef_keras/distill/") and _within(imported, "mfef_keras.training"):
            return "the distiller never imports training/: runs are built on the distiller, not the other way"
        if not module.startswith(("mfef_keras/training/", "mfef_keras/distill/")):
            if any(_within(imported, upper) for upper in UPPER_CORE):
                return "the core's base never imports training/ or distill/"
    if module.startswith("zoo/") and _within(imported, "mfef_keras.export"):
        return "the zoo does not import export"
    if module.startswith("export/") and _within(imported, "mfef_keras.zoo"):
        return "export does not import the zoo"
    return None


def test_the_import_graph_flows_one_way():
    modules = _modules()
    assert "mfef_keras/training/model_source.py" in modules and "zoo/resolve.py" in modules
    violations = [
        f"{name}:{line} imports {imported}: {reason}"
        for name, (package, file) in sorted(modules.items())
        for line, imported in _imports(package, file)
        if (reason := _forbidden(name, imported))
    ]
    assert not violations, "\n".join(violations)


def test_the_rule_sees_a_function_level_import_of_the_zoo(tmp_path):
    planted = tmp_path / "planted.py"
    planted.write_text("def late():\n    from mfef_keras.zoo import resolve_preset\n")
    imports = _imports("mfef_keras", planted)
    assert imports == [(2, "mfef_keras.zoo.resolve_preset")]
    assert _forbidden("mfef_keras/planted.py", imports[0][1])
    assert _forbidden("mfef_keras/training/planted.py", "mfef_keras.export.metadata")
    assert _forbidden("mfef_keras/data/planted.py", "mfef_keras.training.plots")
    assert _forbidden("mfef_keras/distill/methods/planted.py", "mfef_keras.training.config")
    assert not _forbidden("mfef_keras/training/planted.py", "mfef_keras.distill.losses")
    assert _forbidden("zoo/planted.py", "mfef_keras.export")
    assert _forbidden("export/planted.py", "mfef_keras.zoo.resolve")
    assert _forbidden("export/planted.py", "mfef_keras.from_preset")
    assert not _forbidden("export/planted.py", "mfef_keras.__version__")
    assert not _forbidden("zoo/planted.py", "mfef_keras.training.model_source")

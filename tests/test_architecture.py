"""The package is built in floors, and every import points to a floor below or its own.

The rules, checked for every module of ``src/iexact`` by reading its imports:

1. **Downhill.** :data:`FLOORS` lists the floors lowest first; a module may
   import a module of its own floor or of a lower one, never one above. A
   module belongs to the floor of the longest dotted name in :data:`FLOORS`
   it falls under (``iexact.ops.graph`` under ``ops.graph``, below
   ``graph``, while ``iexact.ops.codec`` sits above ``codec``). Only the
   package's ``__version__`` may be read from ``iexact`` itself.
2. **No private names across floors.** A name starting with ``_`` is imported
   only from a module of the importer's own floor.
3. **quant's public face.** Above the codec, ``iexact.quant`` is read through
   ``iexact.quant.__all__`` only.
4. **Every module has a floor.**
5. **Short functions.** No function or method is longer than
   :data:`LONGEST_FUNCTION` lines, docstring included.
6. **Tests mirror the source.** ``tests/<package>/test_<module>.py`` tests
   ``src/iexact/<package>/<module>.py`` (``test_<package>.py`` a package's
   ``__init__``); only the suites that span the package (``tests/integration/``,
   this file and ``tests/test_docs.py``) stand apart.
"""

import ast
from pathlib import Path

import pytest

import iexact
import iexact.quant

SOURCE = Path(iexact.__file__).parent
FLOORS = [  # lowest first; modules of one floor may import each other, never one above
    {"config", "seeds"},
    {"quant"},
    {"kernels"},
    {"ops", "ops.graph", "ops.dropout"},  # the package's __init__ imports nothing
    {"graph"},
    {"codec"},
    {"ops.codec"},
    {"autograd"},
    {"nn"},
    {"memory"},
    {"analysis"},
    {"planning"},
    {"integrations"},
    {"experiments"},
    {"__init__", "__main__"},
]


def _floor(module: str) -> int:
    """The floor of ``iexact.<dotted>``: that of the longest name in :data:`FLOORS` it falls under."""
    parts = module.split(".")[1:] or ["__init__"]
    for length in range(len(parts), 0, -1):
        name = ".".join(parts[:length])
        for index, names in enumerate(FLOORS):
            if name in names:
                return index
    raise KeyError(f"{module} is on no floor")


def _module_name(path: Path) -> str:
    parts = path.relative_to(SOURCE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" and len(parts) > 1 else parts)


def _is_module(dotted: str) -> bool:
    relative = Path(*dotted.split("."))
    return (SOURCE.parent / relative).is_dir() or (SOURCE.parent / relative.with_suffix(".py")).is_file()


def _imports(path: Path):
    """``(imported module, names)`` for every import of iexact in ``path``."""
    name = _module_name(path)
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.split(".")[0] == "iexact":
                names = [alias.name for alias in node.names]
                submodules = [name for name in names if _is_module(f"{target}.{name}")]
                yield from ((f"{target}.{name}", []) for name in submodules)
                if len(submodules) < len(names):
                    yield target, [name for name in names if name not in submodules]
        elif isinstance(node, ast.Import):
            yield from ((alias.name, []) for alias in node.names if alias.name.split(".")[0] == "iexact")


MODULES = sorted(SOURCE.rglob("*.py"))
LONGEST_FUNCTION = 60


@pytest.mark.parametrize("path", MODULES, ids=lambda path: str(path.relative_to(SOURCE)))
def test_every_import_points_downhill(path):
    importer = _module_name(path)
    for target, names in _imports(path):
        if target == "iexact" and importer != "iexact":
            assert _floor(importer) > 0 and names == ["__version__"], f"{importer} imports {names} from iexact"
            continue
        assert _floor(target) <= _floor(importer), f"{importer} imports {target}: a higher floor"


@pytest.mark.parametrize("path", MODULES, ids=lambda path: str(path.relative_to(SOURCE)))
def test_no_private_names_across_floors(path):
    importer = _module_name(path)
    for target, names in _imports(path):
        if _floor(target) == _floor(importer):
            continue
        assert not [n for n in names if n.startswith("_") and n != "__version__"], f"{importer}: {target} {names}"
        if target.startswith("iexact.quant") and _floor(importer) > _floor("iexact.codec"):
            # above the codec, quant is read through its public face only
            assert target == "iexact.quant" and set(names) <= set(iexact.quant.__all__), f"{importer}: {target}"


@pytest.mark.parametrize("path", MODULES, ids=lambda path: str(path.relative_to(SOURCE)))
def test_every_module_has_a_floor(path):
    _floor(_module_name(path))


def test_the_floor_rules_can_fail():
    """The checks above see an upward import and a module off every floor."""
    assert _floor("iexact.ops.graph") < _floor("iexact.graph") < _floor("iexact.codec") < _floor("iexact.ops.codec")
    assert _floor("iexact.ops") == _floor("iexact.ops.dropout")
    with pytest.raises(KeyError, match="no floor"):
        _floor("iexact.elsewhere")


def _long_functions(source: str) -> list[str]:
    return [
        f"{node.name} ({node.end_lineno - node.lineno + 1} lines)"
        for node in ast.walk(ast.parse(source))
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
        and node.end_lineno - node.lineno + 1 > LONGEST_FUNCTION
    ]


@pytest.mark.parametrize("path", MODULES, ids=lambda path: str(path.relative_to(SOURCE)))
def test_no_function_is_longer_than_sixty_lines(path):
    assert not _long_functions(path.read_text())


def test_a_long_function_is_seen():
    body = "\n".join(f"    x{i} = {i}" for i in range(LONGEST_FUNCTION))
    assert _long_functions(f"def short():\n    return 1\n\n\ndef long():\n{body}\n") == ["long (61 lines)"]


TESTS = Path(__file__).resolve().parent
SPANNING = {"test_architecture.py", "test_docs.py"}  # and everything under tests/integration/


def _tested_module(test: Path) -> Path | None:
    """The source file a test file mirrors, or ``None`` for one that spans the package."""
    relative = test.relative_to(TESTS)
    if relative.parts[0] == "integration" or relative.name in SPANNING:
        return None
    name = relative.name.removeprefix("test_").removesuffix(".py")
    folder = SOURCE.joinpath(*relative.parts[:-1])
    return folder / "__init__.py" if folder.name == name else folder / f"{name}.py"


@pytest.mark.parametrize("test", sorted(TESTS.rglob("test_*.py")), ids=lambda path: str(path.relative_to(TESTS)))
def test_tests_mirror_the_source(test):
    module = _tested_module(test)
    assert module is None or module.is_file(), f"{test.relative_to(TESTS)} mirrors no module ({module})"

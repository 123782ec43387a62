"""The package is built in floors (DESIGN §2): every import points to a lower floor."""

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
    {"codec", "graph", "ops"},
    {"autograd"},
    {"nn"},
    {"memory"},
    {"analysis"},
    {"planning"},
    {"experiments"},
    {"__init__", "__main__"},
]


def _floor(module: str) -> int:
    top = module.split(".")[1] if "." in module else "__init__"
    return next(index for index, names in enumerate(FLOORS) if top in names)


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


@pytest.mark.parametrize("path", MODULES, ids=lambda path: str(path.relative_to(SOURCE)))
def test_every_import_points_downhill(path):
    importer = _module_name(path)
    for target, names in _imports(path):
        if target == "iexact" and importer != "iexact":
            assert _floor(importer) > 0 and names == ["__version__"], f"{importer} imports {names} from iexact"
            continue
        assert _floor(target) <= _floor(importer), f"{importer} imports {target}: a higher floor"


@pytest.mark.parametrize("path", MODULES, ids=lambda path: str(path.relative_to(SOURCE)))
def test_no_private_names_across_packages(path):
    importer = _module_name(path)
    for target, names in _imports(path):
        if _floor(target) == _floor(importer):
            continue
        assert not [n for n in names if n.startswith("_") and n != "__version__"], f"{importer}: {target} {names}"
        if target.startswith("iexact.quant") and _floor(importer) >= _floor("iexact.autograd"):
            # above the codec, quant is read through its public face only
            assert target == "iexact.quant" and set(names) <= set(iexact.quant.__all__), f"{importer}: {target}"


def test_the_floors_cover_every_module():
    tops = {_module_name(path).split(".")[1] if "." in _module_name(path) else "__init__" for path in MODULES}
    assert tops <= set().union(*FLOORS)

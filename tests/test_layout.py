"""The package's layout: imports point one way, down the layers docs/ARCHITECTURE.md writes down, with no cycle.

The imports are read from the source (ast), at module level and inside functions alike; only imports under
``if TYPE_CHECKING:`` (never run) are left out. Rules:

- no import cycle between the package's modules;
- a module imports only from its own subpackage and from the layers below its own;
- across subpackages, a name comes from the subpackage itself (``from ..files import save_image``) and is one of the
  names it exports (its ``EXPORTS``): a subpackage's other names are its own business;
- no module imports another module's underscore names.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "diffusers_repro"
BASE = "base"


def documented_layers() -> list[list[str]]:
    """The layers, top first, from the ``Layering:`` line of docs/ARCHITECTURE.md."""
    text = (ROOT / "docs" / "ARCHITECTURE.md").read_text(encoding="utf-8")
    match = re.search(r"^Layering \(top first\): (.+)$", text, re.M)
    assert match, "docs/ARCHITECTURE.md must write down the layering on a line 'Layering (top first): ...'"
    return [[part.strip() for part in layer.split("=")] for layer in match.group(1).strip(" .").split(" > ")]


def module_name(path: Path, package: Path = PACKAGE) -> str:
    parts = path.relative_to(package.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def unit_of(module: str) -> str:
    """The layer unit of a module: its subpackage, or the top-level module's own name."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def _type_checking_nodes(tree: ast.AST) -> set[int]:
    skipped: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skipped.update(id(child) for stmt in node.body for child in ast.walk(stmt))
    return skipped


def exports_of(package_init: Path) -> dict[str, str]:
    """A subpackage's exported names and their modules (``EXPORTS``), or its ``__all__`` when it has no exports."""
    tree = ast.parse(package_init.read_text(encoding="utf-8"))
    assigned = {
        target.id: node.value
        for node in tree.body
        if isinstance(node, ast.Assign)
        for target in node.targets
        if isinstance(target, ast.Name)
    }
    if "EXPORTS" in assigned:
        return ast.literal_eval(assigned["EXPORTS"])
    if "__all__" in assigned:
        return {name: "__init__" for name in ast.literal_eval(assigned["__all__"])}
    return {}


def read_imports(package: Path = PACKAGE) -> list[tuple[str, str, str, int]]:
    """Every relative import of the package: (importing module, imported module, name, line)."""
    modules = {module_name(path, package): path for path in package.rglob("*.py")}
    found = []
    for module, path in modules.items():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        skipped = _type_checking_nodes(tree)
        is_package = path.name == "__init__.py"
        for node in ast.walk(tree):
            if not isinstance(node, ast.ImportFrom) or not node.level or id(node) in skipped:
                continue
            base = module.split(".") if is_package else module.split(".")[:-1]
            base = base[: len(base) - (node.level - 1)]
            target = ".".join(base + (node.module.split(".") if node.module else []))
            for alias in node.names:
                submodule = f"{target}.{alias.name}"
                found.append((module, submodule if submodule in modules else target, alias.name, node.lineno))
    return found


def resolve(target: str, name: str, package: Path = PACKAGE) -> str:
    """The module that defines ``name`` when it is imported from a subpackage's exports."""
    init = package.parent / Path(*target.split(".")) / "__init__.py"
    if init.is_file():
        module = exports_of(init).get(name)
        if module is not None and module != "__init__":
            return f"{target}.{module}"
    return target


def find_cycle(edges: dict[str, set[str]]) -> list[str] | None:
    """A cycle of the graph, as the list of its modules, or `None`."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt) :] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(edges):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def layering_violations(imports, layers: list[list[str]], package: Path = PACKAGE) -> list[str]:
    rank = {unit: index for index, layer in enumerate(layers) for unit in layer}
    problems = []
    for module, target, name, line in imports:
        source_unit, target_unit = unit_of(module), unit_of(target)
        where = f"{module} line {line}: {target}.{name}"
        if name.startswith("_") and not name.startswith("__"):
            problems.append(f"{where}: an underscore name of another module")
        if source_unit == target_unit:
            continue
        if source_unit not in rank or target_unit not in rank:
            problems.append(f"{where}: {source_unit if source_unit not in rank else target_unit} is in no layer")
            continue
        if rank[target_unit] < rank[source_unit] or (
            rank[target_unit] == rank[source_unit] and source_unit != "__init__"
        ):
            if not (rank[target_unit] == rank[source_unit] == len(layers) - 1):  # base modules may use each other
                problems.append(f"{where}: {source_unit} may not import from {target_unit} (a layer above or beside)")
                continue
        init = package.parent / Path(*target.split(".")) / "__init__.py"
        if target.count(".") == 1 and init.is_file() and name not in exports_of(init):
            problems.append(f"{where}: not among the names {target} exports")
        elif target.count(".") > 1 and source_unit != "__init__":
            problems.append(f"{where}: reach into another subpackage through its exports, not its modules")
    return problems


def module_edges(imports, package: Path = PACKAGE) -> dict[str, set[str]]:
    edges: dict[str, set[str]] = {}
    for module, target, name, _ in imports:
        edges.setdefault(module, set()).add(resolve(target, name, package))
    return edges


# --------------------------------------------------------------------------------------------------------------------


def test_the_package_has_no_import_cycle():
    assert find_cycle(module_edges(read_imports())) is None


def test_imports_follow_the_documented_layering():
    layers = documented_layers()
    assert layering_violations(read_imports(), layers) == []


def test_every_subpackage_and_top_level_module_is_in_a_layer():
    units = {unit_of(module_name(path)) for path in PACKAGE.rglob("*.py")}
    documented = {unit for layer in documented_layers() for unit in layer}
    assert units - documented == set()


def test_exports_name_modules_that_define_them():
    for init in PACKAGE.glob("*/__init__.py"):
        for name, module in exports_of(init).items():
            if module == "__init__":
                continue  # a package that defines or imports its names itself (cli)
            source = (init.parent / f"{module}.py").read_text(encoding="utf-8")
            assert re.search(rf"^(class|def) {name}\b|^{name}\s*[:=]", source, re.M), f"{init.parent.name}.{name}"


# The checker itself can fail: a package made in the test with a cycle and an import against the layers.


@pytest.fixture
def bad_package(tmp_path):
    package = tmp_path / "diffusers_repro"
    (package / "files").mkdir(parents=True)
    (package / "records").mkdir()
    (package / "__init__.py").write_text("")
    (package / "files" / "__init__.py").write_text('EXPORTS = {"save": "writing"}\n')
    (package / "records" / "__init__.py").write_text('EXPORTS = {"Record": "provenance"}\n')
    (package / "files" / "writing.py").write_text("from .reading import read\ndef save(): pass\n")
    (package / "files" / "reading.py").write_text("def read():\n    from .writing import save\n")
    (package / "records" / "provenance.py").write_text(
        "from ..files import save\nfrom ..files.reading import read\nfrom .schema import _private\n"
        "class Record: pass\n"
    )
    (package / "records" / "schema.py").write_text("_private = 1\n")
    return package


def test_the_checker_finds_a_cycle_made_inside_a_function(bad_package):
    assert find_cycle(module_edges(read_imports(bad_package), bad_package)) == [
        "diffusers_repro.files.reading",
        "diffusers_repro.files.writing",
        "diffusers_repro.files.reading",
    ]


def test_the_checker_finds_imports_against_the_layers(bad_package):
    problems = layering_violations(read_imports(bad_package), [["__init__"], ["files"], ["records"]], bad_package)
    assert problems == [
        "diffusers_repro.records.provenance line 1: diffusers_repro.files.save: records may not import from files "
        "(a layer above or beside)",
        "diffusers_repro.records.provenance line 2: diffusers_repro.files.reading.read: records may not import from "
        "files (a layer above or beside)",
        "diffusers_repro.records.provenance line 3: diffusers_repro.records.schema._private: an underscore name of "
        "another module",
    ]


def test_test_folders_mirror_the_subpackages():
    # tests/<stage>/ holds the tests of diffusers_repro/<stage>/; tests of the whole package stay at the top.
    folders = {
        path.name for path in (ROOT / "tests").iterdir() if path.is_dir() and not path.name.startswith((".", "_"))
    }
    assert folders <= {path.parent.name for path in PACKAGE.glob("*/__init__.py")}

"""Layering of the ``handover`` package.

(a) The policy runtime runs without torch (torch is an optional extra for export and training):
    every module of ``handover.runtime`` imports with torch blocked, except the torch export tools
    listed in TORCH_MODULES, and ``python -m handover --help`` works with torch blocked.
(b) Dependency direction, checked on the source with ``ast`` (every import statement, including
    those inside functions, relative imports and ``importlib.import_module("...")`` literals):
    - the node graph (GRAPH_MODULES: the modules that assemble every device's and node's process) is
      the top layer: it may import any layer, and no other module imports it;
    - runtime/ does not import handover.sim_twin or handover.calibration, and from handover.drivers
      only the device-interface modules it imports today (RUNTIME_ALLOWED_DRIVER_IMPORTS; the set
      must not grow without a decision: the runtime core may only ever use the interfaces
      handover.drivers.object_tracker / joint_group / device, never a driver or a ROS node);
    - drivers/ and calibration/ do not import handover.sim_twin.
"""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE_ROOT = Path(__file__).resolve().parent.parent  # the folder that is the `handover` package
assert (PACKAGE_ROOT / "runtime" / "__init__.py").is_file()

# Runtime modules that need torch, with the reason. Everything else in runtime/ must import without it.
TORCH_MODULES = {
    "handover.runtime.networks": "the original's torch network definitions, for export (imported lazily by the CLI)",
}

# What runtime/ imports from handover.drivers today (grep/ast, at the time of writing): the object
# tracker interface (ObjectObservation) in episode_sequencer.py, policy_controller.py, policy_node.py.
RUNTIME_ALLOWED_DRIVER_IMPORTS = {"handover.drivers.object_tracker"}
# The only driver modules the runtime core may ever use (interfaces, no hardware, no ROS).
DRIVER_INTERFACE_MODULES = {"handover.drivers.object_tracker", "handover.drivers.joint_group", "handover.drivers.device"}

# The top layer in runtime/: they build the graph of every node (twin, drivers, safety, policy).
GRAPH_MODULES = {"handover.runtime.node_graph", "handover.runtime.node_process", "handover.runtime.bringup",
                 "handover.runtime.graph_benchmark"}

BLOCK_TORCH = "import sys; sys.modules['torch'] = None\n"


def module_name(path: Path) -> str:
    rel = path.relative_to(PACKAGE_ROOT).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(["handover", *parts])


def modules_in(folder: str) -> list[Path]:
    return sorted((PACKAGE_ROOT / folder).rglob("*.py"))


def _resolve_relative(path: Path, level: int, module: str | None) -> str:
    package = module_name(path).split(".")
    if path.name != "__init__.py":
        package = package[:-1]
    base = package[: len(package) - (level - 1)] if level > 1 else package
    return ".".join(base + ([module] if module else []))


def _is_package_module(name: str) -> bool:
    """True if ``name`` (handover.x.y) is a module or subpackage file of this package."""
    parts = name.split(".")
    if parts[0] != "handover":
        return False
    rel = PACKAGE_ROOT.joinpath(*parts[1:])
    return rel.with_suffix(".py").is_file() or (rel / "__init__.py").is_file()


def imported_modules(path: Path) -> set[tuple[str, int]]:
    """Every module a source file imports, as (dotted name, line). ``from a import b`` yields
    ``a.b`` where that is a module of this package (``from handover.drivers import object_tracker``
    is the module handover.drivers.object_tracker), else ``a``."""
    tree = ast.parse(path.read_text(), filename=str(path))
    found: set[tuple[str, int]] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {(alias.name, node.lineno) for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = _resolve_relative(path, node.level, node.module) if node.level else node.module
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                found.add((sub if _is_package_module(sub) else base, node.lineno))
        elif isinstance(node, ast.Call):
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)
            if name in ("import_module", "__import__") and node.args and isinstance(node.args[0], ast.Constant) \
                    and isinstance(node.args[0].value, str):
                found.add((node.args[0].value, node.lineno))
    return found


def within(name: str, package: str) -> bool:
    return name == package or name.startswith(package + ".")


def violations(folder: str, forbidden: tuple[str, ...], allowed: set[str] = frozenset()) -> list[str]:
    bad = []
    for path in modules_in(folder):
        if module_name(path) in GRAPH_MODULES:
            continue
        for name, line in sorted(imported_modules(path)):
            if any(within(name, f) for f in forbidden) and not any(within(name, a) for a in allowed):
                bad.append(f"{path.relative_to(PACKAGE_ROOT)}:{line}: {name}")
    return bad


# --------------------------------------------------------------------------- (a) no torch


def _run(code: str, cwd: Path) -> subprocess.CompletedProcess:
    """Run ``code`` in a fresh interpreter (the installed ``handover``), from a neutral folder."""
    env = dict(os.environ, MUJOCO_GL=os.environ.get("MUJOCO_GL", "egl"))
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                          env=env, cwd=str(cwd))


def test_runtime_modules_are_found():
    names = {module_name(p) for p in modules_in("runtime")}
    assert {"handover.runtime", "handover.runtime.contract", "handover.runtime.policy_step"} <= names
    assert set(TORCH_MODULES) <= names  # the exemptions name real modules


def test_runtime_imports_without_torch(tmp_path):
    names = sorted(module_name(p) for p in modules_in("runtime"))
    to_import = [n for n in names if n not in TORCH_MODULES]
    code = BLOCK_TORCH + f"""
import importlib, json, traceback
failed = {{}}
for name in {to_import!r}:
    try:
        importlib.import_module(name)
    except BaseException:
        failed[name] = traceback.format_exc(limit=-3)
assert sys.modules['torch'] is None
print(json.dumps(failed))
"""
    r = _run(code, tmp_path)
    assert r.returncode == 0, r.stderr
    failed = json.loads(r.stdout.strip().splitlines()[-1])
    assert not failed, "runtime modules that need torch:\n" + "\n".join(f"{k}:\n{v}" for k, v in failed.items())


def test_torch_block_is_effective(tmp_path):
    # guard against a block that does nothing: the exempt torch modules do fail with it
    r = _run(BLOCK_TORCH + "import handover.runtime.networks", tmp_path)
    assert r.returncode != 0 and "torch" in r.stderr


def test_cli_help_works_without_torch(tmp_path):
    r = _run(BLOCK_TORCH + "sys.argv = ['handover', '--help']\nimport runpy\nrunpy.run_module('handover', run_name='__main__', alter_sys=True)",
             tmp_path)
    assert r.returncode == 0, r.stderr
    assert "usage: handover" in r.stdout
    for command in ("contract", "export", "config"):
        assert command in r.stdout


# --------------------------------------------------------------------------- (b) direction


def test_import_scanner_sees_relative_and_lazy_imports(tmp_path, monkeypatch):
    # the scanner itself, on a made-up module inside the package layout
    fake_root = tmp_path / "handover"
    (fake_root / "runtime").mkdir(parents=True)
    src = fake_root / "runtime" / "x.py"
    (fake_root / "sim_twin").mkdir()
    (fake_root / "sim_twin" / "__init__.py").write_text("")
    (fake_root / "sim_twin" / "twin.py").write_text("")
    src.write_text(
        "import numpy\n"
        "from numpy import linalg\n"
        "from ..sim_twin import twin\n"
        "from . import contract\n"
        "def f():\n"
        "    from handover.drivers.mirror import Mirror\n"
        "    importlib.import_module('handover.calibration.extrinsics')\n"
    )
    monkeypatch.setattr(sys.modules[__name__], "PACKAGE_ROOT", fake_root)
    assert imported_modules(src) == {
        ("numpy", 1), ("numpy", 2),
        ("handover.sim_twin.twin", 3),  # a module file: named as such
        ("handover.runtime", 4),  # runtime/contract.py does not exist in the fake tree
        ("handover.drivers.mirror", 6),
        ("handover.calibration.extrinsics", 7),
    }


def test_runtime_does_not_import_the_twin_or_calibration():
    assert violations("runtime", ("handover.sim_twin", "handover.calibration")) == []


def test_runtime_imports_only_the_allowed_driver_interfaces():
    assert RUNTIME_ALLOWED_DRIVER_IMPORTS <= DRIVER_INTERFACE_MODULES
    assert violations("runtime", ("handover.drivers",), RUNTIME_ALLOWED_DRIVER_IMPORTS) == []


def test_runtime_driver_imports_are_exactly_the_known_set():
    # If this fails because an allowed import went away, shrink RUNTIME_ALLOWED_DRIVER_IMPORTS.
    used = set()
    for path in modules_in("runtime"):
        if module_name(path) in GRAPH_MODULES:
            continue
        for name, _ in imported_modules(path):
            used |= {a for a in RUNTIME_ALLOWED_DRIVER_IMPORTS if within(name, a)}
    assert used == RUNTIME_ALLOWED_DRIVER_IMPORTS


@pytest.mark.parametrize("folder", ["drivers", "calibration"])
def test_drivers_and_calibration_do_not_import_the_twin(folder):
    assert modules_in(folder), f"{folder}/ has no modules"
    assert violations(folder, ("handover.sim_twin",)) == []


def test_the_graph_modules_exist_and_nothing_else_imports_them():
    assert GRAPH_MODULES <= {module_name(p) for p in modules_in("runtime")}
    bad = []
    for folder in ("runtime", "drivers", "sim_twin", "calibration"):
        for path in modules_in(folder):
            if module_name(path) in GRAPH_MODULES:
                continue
            bad += [f"{path.relative_to(PACKAGE_ROOT)}:{line}: {name}" for name, line in imported_modules(path)
                    if any(within(name, g) for g in GRAPH_MODULES)]
    assert bad == []


def test_launch_folder_is_data_only():
    # a launch/__init__.py would make `import launch` find this folder instead of ROS's launch
    # wherever the repository root is on sys.path (python -m pytest from the root)
    assert not (PACKAGE_ROOT / "launch" / "__init__.py").exists()
    assert [p.name for p in (PACKAGE_ROOT / "launch").glob("*.py") if not p.name.endswith(".launch.py")] == []

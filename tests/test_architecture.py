"""fosp_core never imports ROS: it must run (train, evaluate, collect) where ROS is absent."""

import subprocess
import sys

from tests.ros_graph import REPO


def test_fosp_core_imports_no_ros():
    code = """
import importlib, pkgutil, sys
import fosp_core
for info in pkgutil.walk_packages(fosp_core.__path__, "fosp_core."):
    importlib.import_module(info.name)
from fosp.cli import build_parser
build_parser()
ros = sorted(m for m in sys.modules if m.split(".")[0] in ("rclpy", "rosidl_runtime_py",
             "std_msgs", "sensor_msgs", "geometry_msgs", "std_srvs"))
print(ros)
assert not ros, ros
"""
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr


PACKAGES = ("fosp", "fosp_core", "fosp_ros", "fosp_teleop")


def import_graph() -> dict[str, set[str]]:
    """Module -> the project modules it imports anywhere in its file (lazy imports too)."""
    import ast

    modules = {}
    for package in PACKAGES:
        for path in (REPO / package).rglob("*.py"):
            name = ".".join(path.relative_to(REPO).with_suffix("").parts)
            modules[name.removesuffix(".__init__")] = path
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        edges = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                targets = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            elif isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            else:
                continue
            edges |= {t for t in targets if t in modules and t != name}
        graph[name] = edges
    return graph


def test_fosp_core_imports_none_of_the_packages_above_it():
    graph = import_graph()
    above = {"fosp", "fosp_ros", "fosp_teleop"}
    wrong = sorted(f"{m} -> {t}" for m, ts in graph.items() if m.startswith("fosp_core")
                   for t in ts if t.split(".")[0] in above)
    assert not wrong, wrong
    for path in (REPO / "fosp_core").rglob("*.py"):
        assert "import rclpy" not in path.read_text(), path


def test_no_import_circles():
    graph = import_graph()
    # Package __init__ modules are not edges of their own: importing a.b runs a/__init__.
    state: dict[str, int] = {}
    cycles = []

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        for target in sorted(graph.get(node, ())):
            if state.get(target) == 1:
                cycles.append(stack[stack.index(target):] + [target])
            elif target not in state:
                visit(target, [*stack, target])
        state[node] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])
    assert not cycles, cycles[:3]


def test_fosp_help_loads_no_heavy_library():
    """`fosp --help` stays instant: no numpy, torch, MuJoCo or ROS to list the commands."""
    code = """
import sys
from fosp.cli import build_parser
build_parser().format_help()
print(sorted({m.split(".")[0] for m in sys.modules} & {"numpy", "torch", "mujoco", "rclpy"}))
"""
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]", result.stdout

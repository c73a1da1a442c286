"""SafeReach on the robot or its twin: ``ros2 launch fosp_ros safereach.launch.py``.

With no argument it runs the simulated twin with the shipped (state-mode) model: episodes,
a fine-tuning round after each one, ``ros2 service call /fosp/finetune std_srvs/srv/Trigger``.

Arguments:
- ``use_sim`` (true): the MuJoCo twin stands in for franka_ros2 and the camera.
- ``run``: the pretrained run the learner fine-tunes ('' = the shipped model); ``data``: its
  offline dataset ('' = the one it was trained on, if known).
- ``policy_run``: a run the policy acts with from the start, e.g. the learner's ``RUN/online``;
  with ``with_learner:=false`` the fine-tuned policy runs without learning.
- ``with_learner`` (true): false on a robot PC whose learner runs on a GPU machine.
- ``camera`` (fosp): on the robot, fosp | realsense-ros (its rs_launch.py) | none.
- ``controller`` ('' = the config's ``ros.controller``): a profile of ``ros.controllers``.
- ``recipe`` ('' = the run's own): a recipe of config/recipes (paper, safe-clone) for the
  learner's fine-tuning and the policy's acting.
- ``config`` ('' = the installed config/safereach.yaml), ``task`` (simulated task).

Every argument is checked before a node starts (``fosp_ros.graph.launch_plan``): a wrong one
stops the launch with one line naming it. The nodes are ``fosp_ros.graph``'s, the ones
``fosp bringup safereach`` starts in one process.
"""

from fosp_ros.launch_description import launch_description

GRAPH = "safereach"
ARGUMENTS = {"use_sim": "true", "config": "", "run": "", "data": "", "task": "",
             "with_learner": "true", "policy_run": "", "camera": "fosp", "controller": "",
             "recipe": ""}


def generate_launch_description():
    return launch_description(GRAPH, ARGUMENTS)

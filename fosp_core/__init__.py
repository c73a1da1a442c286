"""fosp_core: FOSP (Fine-tuning Offline Safe Policy) in pure Python + PyTorch.

No ROS import anywhere in this package: the ROS nodes in ``fosp_ros`` and ``fosp_teleop``
are thin adapters over it.
"""

__version__ = "0.1.0"

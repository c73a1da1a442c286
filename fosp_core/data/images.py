"""Camera frame -> the image the dataset stores and the policy sees: one function for all.

The recorder, the rosbag importer and the policy node all call ``to_policy_image``, so a frame
from a real 640x480 RealSense looks to the policy exactly as the frames it was trained on.
(Turning those uint8 pixels into network input is ``fosp_core.agent.networks.preprocess_image``,
shared the same way by training and deployment.)
"""

from __future__ import annotations

import cv2
import numpy as np

POLICY_IMAGE_SIZE = 64


def to_policy_image(rgb: np.ndarray, size: int = POLICY_IMAGE_SIZE) -> np.ndarray:
    """(H, W, 3) uint8 RGB -> (size, size, 3) uint8, contiguous.

    INTER_AREA averages the source pixels under each target pixel: no aliasing when a 480x640
    camera frame shrinks to 64x64. A frame already at the size is returned unchanged.
    """
    rgb = np.asarray(rgb)
    if rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"expected an (H, W, 3) RGB image, got shape {rgb.shape}")
    if rgb.shape[:2] != (size, size):
        rgb = cv2.resize(rgb, (size, size), interpolation=cv2.INTER_AREA)
    return np.ascontiguousarray(rgb, dtype=np.uint8)

"""Contact sheet of the four SafeReach tasks: what the policy sees (64x64) and a larger view."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from fosp_core.envs.safereach import SafeReachEnv
from fosp_core.envs.tasks import TASKS
from fosp_core.util.files import save_figure

LARGE = 256


def task_frames(seed: int = 0) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """(task, 64x64 policy frame, large frame) at the start of a seeded episode of each task."""
    frames = []
    for task in TASKS:
        env = SafeReachEnv(task=task)
        obs, _ = env.reset(seed=seed)
        frames.append((task, obs["image"], env.render_image(LARGE)))
        env.close()
    return frames


def write_contact_sheet(path: str | Path, seed: int = 0) -> Path:
    """Top row: the 64x64 frames scaled up without smoothing; bottom row: rendered at 256x256."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    frames = task_frames(seed)
    fig = Figure(figsize=(3 * len(frames), 6.4), dpi=100)
    for i, (task, small, large) in enumerate(frames):
        top = fig.add_subplot(2, len(frames), i + 1)
        top.imshow(small, interpolation="nearest")
        top.set_title(f"{task}\n(64x64, policy input)", fontsize=9)
        bottom = fig.add_subplot(2, len(frames), len(frames) + i + 1)
        bottom.imshow(large)
        bottom.set_title(f"{LARGE}x{LARGE}", fontsize=9)
        for ax in (top, bottom):
            ax.set_xticks([])
            ax.set_yticks([])
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_figure(fig, path)
    return path

import os

# Headless rendering for every test process, before anything imports mujoco.
os.environ.setdefault("MUJOCO_GL", "egl")

import os

# Headless rendering for every test process, before anything imports mujoco.
os.environ.setdefault("MUJOCO_GL", "egl")


import pytest  # noqa: E402


@pytest.fixture
def one_torch_thread():
    """Torch on one thread, seeded, restored after: two threads fighting other processes on a
    2-core machine run ~10x slower, and seeding keeps the networks' tests deterministic."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    yield
    torch.set_num_threads(threads)

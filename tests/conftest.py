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


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory):
    """(run, data): a tiny state-mode agent pretrained for 3 steps on a 4-episode dataset."""
    from fosp_core.learning.train import pretrain
    from tests.agent_helpers import tiny_config, write_dataset

    root = tmp_path_factory.mktemp("pretrained")
    data = write_dataset(root / "data", episodes=4)
    pretrain(data, root / "run", tiny_config(), steps=3, progress=False)
    return root / "run", data

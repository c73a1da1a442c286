"""fosp demo: fine-tuning through the ROS graph end to end, on a tiny run and short episodes."""


import pytest
import torch
import yaml

from fosp.cli import main
from fosp_core.learning.train import pretrain
from tests.agent_helpers import strict_loads, tiny_config, write_dataset
from tests.ros_graph import REPO


@pytest.fixture()
def tiny_run(tmp_path):
    torch.set_num_threads(1)
    data = write_dataset(tmp_path / "data", episodes=4)
    pretrain(data, tmp_path / "run", tiny_config(), steps=2, progress=False)
    config = yaml.safe_load((REPO / "config" / "safereach.yaml").read_text())
    config["env"]["episode_steps"] = 8
    (tmp_path / "graph.yaml").write_text(yaml.safe_dump(config))
    return tmp_path


def test_demo_through_the_graph_reports_before_during_after(tiny_run, capsys):
    out = tiny_run / "demo"
    assert main(["demo", "--run", str(tiny_run / "run"), "--task", "safereach-target-shape",
                 "--trajectories", "2", "--grad-steps", "2", "--eval-episodes", "1",
                 "--out", str(out), "--config", str(tiny_run / "graph.yaml")]) == 0
    text = capsys.readouterr().out
    assert text.count("/fosp/finetune: steps=2") == 2
    # fine-tuning after each trajectory: the policy waited for new weights before episode 2
    assert "trajectories=1\n" in text and "trajectories=2\n" in text
    for row in ("before", "during", "after", "cost regret"):
        assert row in text
    report = strict_loads((out / "report.json").read_text())
    assert report["during"]["episodes"] == 2 and report["through"].startswith("ROS 2")
    assert (out / "online" / "learner.pt").is_file()
    assert (out / "finetune.png").read_bytes()[:4] == b"\x89PNG"

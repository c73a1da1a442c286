"""fosp_core.learning.extract: a fresh actor fitted to a run's frozen critics (eq. 19-20)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from fosp.cli import main
from fosp_core.agent.math import symlog
from fosp_core.data.dataset import load_dataset
from fosp_core.learning.extract import (
    EXTRACT_NAME,
    dataset_terms,
    extract_policy,
    fit_actor,
    regression_weights,
    weight_by_outcome,
)
from fosp_core.learning.runs import CHECKPOINT_NAME, DATASET_NAME, load_agent
from fosp_core.learning.train import pretrain
from tests.agent_helpers import tiny_config, write_dataset

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    return write_dataset(tmp_path_factory.mktemp("data") / "synthetic")


@pytest.fixture(scope="module")
def run_dir(data_dir, tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("runs") / "run"
    pretrain(data_dir, run, tiny_config(), steps=3, progress=False)
    return run


def test_fit_actor_follows_the_weights():
    # Half the rows push action 0 to +0.5, half to -0.5, from the same inputs: weight on the
    # first half only must move the actor's mean to +0.5, equal weights leave it near 0.
    config = tiny_config(actor_critic={"actor_lr": 3e-3})
    inputs = torch.randn(400, 8)
    actions = torch.zeros(400, 6)
    actions[:200, 0], actions[200:, 0] = 0.5, -0.5
    first_half = torch.cat([torch.ones(200), torch.zeros(200)])
    means = {}
    for name, weights in (("first half", first_half), ("all", torch.ones(400))):
        actor = fit_actor(inputs, actions, weights, config, updates=300, seed=0)
        with torch.no_grad():
            means[name] = float(actor(inputs).mode[:, 0].mean())
    assert means["first half"] == pytest.approx(0.5, abs=0.1)
    assert abs(means["all"]) < 0.15


def test_fit_actor_rejects_bad_input():
    config = tiny_config()
    with pytest.raises(ValueError, match="at least one update"):
        fit_actor(torch.zeros(3, 8), torch.zeros(3, 6), torch.ones(3), config, 0, 0)
    with pytest.raises(ValueError, match="differ in length"):
        fit_actor(torch.zeros(3, 8), torch.zeros(2, 6), torch.ones(3), config, 1, 0)


def test_dataset_terms_pair_each_row_with_the_action_taken_out_of_it(run_dir, data_dir):
    agent, _ = load_agent(run_dir)
    agent.config.actor_critic.actor_input = "observation"  # what a fresh actor may read
    trajectories = load_dataset(data_dir).trajectories
    rows = dataset_terms(agent, trajectories)
    assert len(rows) == len(trajectories)
    for row, trajectory in zip(rows, trajectories):
        arrays = trajectory.arrays
        n = len(arrays["action"]) - 1  # transitions: rows 0..T-1 with the action of row t + 1
        assert row["state"].shape[0] == row["weights"].shape[0] == n
        assert torch.equal(row["action"], torch.as_tensor(arrays["action"][1:]).clamp(-1, 1))
        state = agent.normalizer({"state": torch.as_tensor(arrays["state"])})["state"][:-1]
        assert torch.allclose(row["actor_input"], symlog(state))
        assert (row["weights"] > 0).all()
        costs = arrays["cost"][1:]  # what each transition earned
        expected = int(costs.nonzero()[0][0]) if costs.any() else None
        assert row["first_cost"] == expected


def test_dataset_terms_see_the_features_the_deployed_agent_sees(run_dir, data_dir):
    agent, _ = load_agent(run_dir)
    trajectory = load_dataset(data_dir).trajectories[0]
    row = dataset_terms(agent, [trajectory])[0]
    arrays = trajectory.arrays
    agent.reset()
    for t in range(len(arrays["action"]) - 1):
        features = agent.observe({"state": arrays["state"][t]}, deterministic=True)
        assert torch.allclose(features[0], row["state"][t], atol=1e-5), t
        agent.remember_action(torch.as_tensor(arrays["action"][t + 1]))


def test_extract_replaces_only_the_actor_and_improves_its_weighted_fit(run_dir, tmp_path):
    out = tmp_path / "extracted"
    info = extract_policy(run_dir, out, updates=200, seed=1, progress=False)
    before = torch.load(run_dir / CHECKPOINT_NAME, weights_only=True)["agent"]["modules"]
    after = torch.load(out / CHECKPOINT_NAME, weights_only=True)["agent"]["modules"]
    assert set(before) == set(after)
    actor_keys = {k for k in before if k.startswith("actor_critic.actor.")}
    assert actor_keys
    for key in set(before) - actor_keys:
        assert torch.equal(before[key], after[key]), key
    assert any(not torch.equal(before[k], after[k]) for k in actor_keys)
    assert json.loads((out / EXTRACT_NAME).read_text())["updates"] == 200 == info["updates"]
    assert (out / DATASET_NAME).read_text() == (run_dir / DATASET_NAME).read_text()

    # The fitted actor puts more weighted likelihood on the dataset actions than the run's own.
    data = (run_dir / DATASET_NAME).read_text().strip()
    fits = {}
    for name, run in (("run", run_dir), ("extracted", out)):
        agent, _ = load_agent(run)
        rows = dataset_terms(agent, load_dataset(data).trajectories)
        with torch.no_grad():
            fits[name] = float(sum((r["weights"] * agent.actor_critic.actor(r["actor_input"])
                                    .log_prob(r["action"])).sum() for r in rows))
    assert fits["extracted"] > fits["run"]


def test_weight_by_outcome_on_hand_computed_weights():
    def row(weights, success, violation, first_cost=None):
        return {"weights": torch.tensor(weights), "success": success, "violation": violation,
                "first_cost": first_cost}

    rows = [row([1.0, 1.0], True, False),
            row([4.0, 2.0, 0.0], True, True, first_cost=1),  # lead-in: the first two
            row([1.0], False, False)]
    # Mean over all six transitions: 9 / 6 = 1.5.
    assert weight_by_outcome(rows) == {
        "safe_success": {"transitions": 2, "relative_weight": pytest.approx(1 / 1.5)},
        "safe_fail": {"transitions": 1, "relative_weight": pytest.approx(1 / 1.5)},
        "unsafe_success": {"transitions": 3, "relative_weight": pytest.approx(2 / 1.5)},
        "unsafe_lead_in": {"transitions": 2, "relative_weight": pytest.approx(3 / 1.5)},
    }


def test_regression_weights_on_hand_computed_rows():
    def row(weights, success, violation):
        return {"weights": torch.tensor(weights), "success": success, "violation": violation}

    rows = [row([2.0, 0.5], True, False), row([4.0], True, True), row([1.0, 3.0], False, False),
            row([0.25], True, False)]
    assert regression_weights(rows, "eq19").tolist() == [2.0, 0.5, 4.0, 1.0, 3.0, 0.25]
    # Only the safe demonstrations that reached the target, each transition alike.
    assert regression_weights(rows, "safe-success").tolist() == [1, 1, 0, 0, 0, 1]
    with pytest.raises(ValueError, match="no demonstration reached the target without a cost"):
        regression_weights(rows[1:3], "safe-success")
    with pytest.raises(ValueError, match="weights must be one of"):
        regression_weights(rows, "oracle")


def test_cli_extract_safe_success_fits_only_those_demonstrations(run_dir, data_dir, tmp_path,
                                                                  capsys):
    out = tmp_path / "filtered"
    assert main(["extract", "--run", str(run_dir), "--out", str(out), "--updates", "5",
                 "--weights", "safe-success"]) == 0
    trajectories = load_dataset(data_dir).trajectories
    kept = sum(len(t.arrays["action"]) - 1 for t in trajectories
               if t.arrays["reward"].any() and not t.arrays["cost"].any())
    info = json.loads((out / EXTRACT_NAME).read_text())
    assert info["weights"] == "safe-success" and info["rows_weighted"] == kept > 0
    assert info["rows"] > kept
    assert f"the {kept} of {info['rows']} dataset transitions from demonstrations that " \
        "reached the target without a cost" in capsys.readouterr().out


def test_cli_extract_with_another_actor_input_then_eval(run_dir, data_dir, tmp_path, capsys):
    out = tmp_path / "obs"
    args = ["extract", "--run", str(run_dir), "--out", str(out), "--updates", "20",
            "--set", "actor_critic.actor_input=observation",
            "--set", "actor_critic.awr_beta_cost=20"]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "fresh actor fitted for 20 updates" in printed
    by_outcome = json.loads((out / EXTRACT_NAME).read_text())["by_outcome"]
    assert sum(group["transitions"] for name, group in by_outcome.items()
               if name != "unsafe_lead_in") == sum(  # every transition of the dataset, once
        len(t.arrays["action"]) - 1 for t in load_dataset(data_dir).trajectories)
    for name, group in by_outcome.items():
        assert f"{name:<15} {group['relative_weight']:6.2f}" in printed
    agent, step = load_agent(out)
    assert step == 3 and agent.config.actor_critic.actor_input == "observation"
    assert agent.config.actor_critic.awr_beta_cost == 20
    assert agent.actor_critic.actor.mlp.body[0].in_features == agent.config.state_dim
    assert main(["eval", "--run", str(out), "--episodes", "1", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["episodes"] == 1
    # A second extraction into the same directory would overwrite it.
    assert main(args) == 2
    assert "already holds a checkpoint" in capsys.readouterr().err


def test_extract_an_obstacle_set_actor_and_act_among_more_obstacles(run_dir, tmp_path, capsys):
    # The set actor is new (its weights do not fit the run's actor), so extraction is how an
    # existing run gets one; it then acts on a task with more obstacles than the data.
    out = tmp_path / "set"
    info = extract_policy(run_dir, out, updates=5, progress=False,
                          overrides={"actor_critic": {"actor_input": "obstacle_set"}})
    agent, _ = load_agent(out)
    assert agent.actor_critic.actor.encoder is not None and info["updates"] == 5
    assert main(["eval", "--run", str(out), "--task", "safereach-more-obstacles",
                 "--episodes", "1", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["episodes"] == 1


def test_cli_extract_errors(run_dir, data_dir, tmp_path, capsys):
    dreamer = tmp_path / "dreamer"
    pretrain(data_dir, dreamer, tiny_config(algo="dreamer"), steps=1, progress=False)
    unrecorded = tmp_path / "unrecorded"  # a run directory without its dataset.txt
    unrecorded.mkdir()
    for name in (CHECKPOINT_NAME, "config.yaml"):
        (unrecorded / name).write_bytes((run_dir / name).read_bytes())
    cases = [
        (["--run", str(dreamer)], "needs a FOSP run"),
        (["--run", str(unrecorded)], "no dataset.txt; pass the dataset with --data"),
        (["--run", str(tmp_path / "none")], "run directory not found"),
        (["--run", str(run_dir), "--weights", "oracle"], "weights must be one of"),
        (["--run", str(run_dir), "--data", str(tmp_path / "nodata")], "nodata"),
    ]
    for extra, message in cases:
        assert main(["extract", "--out", str(tmp_path / "x")] + extra) == 2
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err, (extra, err)
    assert not (tmp_path / "x" / CHECKPOINT_NAME).exists()
    with pytest.raises(SystemExit):  # a usage error of the parser, exit code 2
        main(["extract", "--out", str(tmp_path / "x"), "--run", str(run_dir), "--updates", "0"])
    assert "--updates: 0 is less than 1" in capsys.readouterr().err


def test_extract_in_image_mode(data_dir, tmp_path):
    run, out = tmp_path / "image", tmp_path / "image-x"
    pretrain(data_dir, run, tiny_config(obs_mode="image"), steps=1, progress=False)
    info = extract_policy(run, out, updates=2, progress=False)
    agent, _ = load_agent(out)
    assert agent.config.obs_mode == "image" and info["rows"] == 6 * 20
    before = torch.load(run / CHECKPOINT_NAME, weights_only=True)["agent"]["modules"]
    assert not torch.equal(agent.actor_critic.actor.mlp.out.weight,
                           before["actor_critic.actor.mlp.out.weight"])

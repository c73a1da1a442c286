"""fosp_core.learning.train and the CLI: checkpoints, exact resume, learning, evaluation, errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from fosp.cli import main
from fosp_core.agent.agent import Agent
from fosp_core.agent.replay import SequenceReplay
from fosp_core.data.dataset import load_dataset
from fosp_core.learning.runs import CHECKPOINT_NAME, CONFIG_NAME, load_agent
from fosp_core.learning.train import evaluate, pretrain
from fosp_core.util.config import save_yaml
from tests.agent_helpers import fosp_process, interrupt, tb_scalars, tiny_config, write_dataset

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    return write_dataset(tmp_path_factory.mktemp("data") / "synthetic")


def test_pretrain_writes_config_tensorboard_and_a_weights_only_checkpoint(data_dir, tmp_path):
    run = tmp_path / "run"
    config = tiny_config()
    pretrain(data_dir, run, config, steps=3, ckpt_every=2, progress=False)
    assert (run / CONFIG_NAME).is_file() and list((run / "tb").glob("events.out.tfevents.*"))
    assert not list(run.glob("*.tmp"))
    state = torch.load(run / CHECKPOINT_NAME, weights_only=True)
    assert state["step"] == 3
    assert {"agent", "replay", "rng"} <= set(state)
    assert {"model", "actor", "critic", "ref"} == set(state["agent"]["optimizers"])
    assert "actor_critic.lagrange" in state["agent"]["modules"]
    # The observation normaliser was fitted on the dataset and travels with the weights.
    assert not torch.equal(state["agent"]["modules"]["normalizer.std"], torch.ones(25))

    agent, step = load_agent(run)
    assert step == 3 and agent.config == config
    reference = Agent(config)
    reference.load_state_dict(state["agent"])
    for a, b in zip(agent.parameters(), reference.parameters()):
        assert torch.equal(a, b)


def test_checkpoint_round_trip_restores_optimizer_state(data_dir, tmp_path):
    config = tiny_config()
    agent = Agent(config)
    replay = SequenceReplay(load_dataset(data_dir).trajectories, 4, 8, "state")
    agent.train_step(replay.sample())
    path = tmp_path / "agent.pt"
    torch.save(agent.state_dict(), path)
    fresh = Agent(config)
    fresh.load_state_dict(torch.load(path, weights_only=True))
    for name, opt in agent.optimizers().items():
        other = fresh.optimizers()[name].state_dict()["state"]
        for index, slots in opt.state_dict()["state"].items():
            for key, value in slots.items():
                assert torch.equal(value, other[index][key]), (name, index, key)


def test_learning_rates_of_the_config_win_over_the_ones_saved_with_the_optimizers(data_dir,
                                                                                   tmp_path):
    """`--set actor_critic.actor_lr=...` on a saved run (finetune, extract) must take effect."""
    config = tiny_config()
    run = tmp_path / "run"
    pretrain(data_dir, run, config, steps=1, ckpt_every=1, progress=False)
    agent, _ = load_agent(run, overrides={"model": {"lr": 1e-6},
                                          "actor_critic": {"actor_lr": 2e-6, "critic_lr": 3e-6}})
    lrs = {name: opt.param_groups[0]["lr"] for name, opt in agent.optimizers().items()}
    assert lrs["model"] == 1e-6 and lrs["actor"] == 2e-6 and lrs["critic"] == 3e-6
    assert lrs["ref"] == config.actor_critic.ref_lr
    # ... and the moments still come from the checkpoint.
    saved = torch.load(run / CHECKPOINT_NAME, weights_only=True)["agent"]["optimizers"]
    assert torch.equal(agent.model_opt.state_dict()["state"][0]["exp_avg"],
                       saved["model"]["state"][0]["exp_avg"])


def test_an_override_that_changes_a_network_size_is_named_in_a_clear_error(data_dir, tmp_path):
    run = tmp_path / "run"
    config = tiny_config()
    pretrain(data_dir, run, config, steps=1, ckpt_every=1, progress=False)
    with pytest.raises(ValueError, match=r"model\.deter=3.*network sizes are fixed"):
        load_agent(run, overrides={"model": {"deter": 3}})
    # An override that leaves the sizes alone still loads.
    load_agent(run, overrides={"fosp": {"cost_max": 0.5}})


def test_resume_gives_exactly_the_next_loss_of_an_uninterrupted_run(data_dir, tmp_path):
    config = tiny_config()
    straight = pretrain(data_dir, tmp_path / "a", config, steps=4, ckpt_every=3, progress=False)

    pretrain(data_dir, tmp_path / "b", config, steps=3, ckpt_every=3, progress=False)
    torch.manual_seed(1234)  # scramble the global RNGs: resume must restore them
    np.random.seed(1234)
    resumed = pretrain(data_dir, tmp_path / "b", config, steps=4, resume=True, progress=False)
    assert resumed["model/loss"] == straight["model/loss"]
    assert resumed == straight
    # The curve goes on where it stopped, the checkpoint's step included.
    curve = tb_scalars(tmp_path / "b" / "tb", "model/loss")
    assert curve == tb_scalars(tmp_path / "a" / "tb", "model/loss")
    assert [step for step, _ in curve] == [1, 2, 3, 4]


def test_existing_run_is_not_overwritten_without_resume(data_dir, tmp_path):
    pretrain(data_dir, tmp_path / "r", tiny_config(), steps=1, progress=False)
    with pytest.raises(ValueError, match="resume"):
        pretrain(data_dir, tmp_path / "r", tiny_config(), steps=2, progress=False)


def test_losses_fall_in_state_mode(data_dir):
    torch.manual_seed(0)
    config = tiny_config(batch_size=8, model={"lr": 1e-3}, actor_critic={"critic_lr": 1e-3})
    agent = Agent(config)
    replay = SequenceReplay(load_dataset(data_dir).trajectories, 8, 8, "state", seed=0)
    history = [agent.train_step(replay.sample()) for _ in range(60)]

    def mean(key: str, part: slice) -> float:
        return float(np.mean([m[key] for m in history[part]]))

    for key in ("model/loss", "model/state_loss", "ac/q_reward_data_loss", "ac/critic_loss"):
        assert mean(key, slice(-10, None)) < 0.8 * mean(key, slice(0, 10)), key


def test_evaluate_runs_the_agent_in_the_env_and_writes_a_strip(data_dir, tmp_path):
    run = tmp_path / "run"
    pretrain(data_dir, run, tiny_config(), steps=1, progress=False)
    result = evaluate(run, task="safereach", episodes=1, seed=0)
    assert result["episodes"] == 1
    for key in ("success_rate", "violation_rate"):
        assert result[key] in (0.0, 1.0)
    with pytest.raises(ValueError, match="at least one"):
        evaluate(run, episodes=0)
    assert result["reward_return"] >= 0 and result["cost_return"] >= 0
    assert (run / "rollout.png").read_bytes()[:8] == PNG_SIGNATURE


def test_evaluate_counts_the_distinct_layouts_its_episodes_drew(data_dir, tmp_path):
    from fosp_core.envs.safereach import SafeReachEnv

    run = tmp_path / "run"
    pretrain(data_dir, run, tiny_config(), steps=1, progress=False)
    result = evaluate(run, task="safereach", episodes=12, seed=0)
    env = SafeReachEnv(task="safereach", obs_mode="state")
    keys = []
    for k in range(12):
        env.reset(seed=k)
        keys.append(env.layout.key)
    env.close()
    # The twin's layouts come from a small set: 12 episodes already repeat some.
    assert result["layouts"] == len(set(keys)) < 12


def test_eval_each_layout_runs_every_distinct_layout_once(data_dir, tmp_path, capsys):
    from fosp_core.envs.layouts import all_layouts
    from fosp_core.envs.tasks import TASKS

    run = tmp_path / "run"
    pretrain(data_dir, run, tiny_config(), steps=1, progress=False)
    assert main(["eval", "--run", str(run), "--each-layout", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    rows = result["per_layout"]
    keys = [(row["target_index"], tuple(row["obstacle_indices"])) for row in rows]
    assert keys == [layout.key for layout in all_layouts(TASKS["safereach"])]
    assert result["episodes"] == result["layouts"] == len(set(keys)) == 27
    assert result["success_rate"] == pytest.approx(np.mean([r["success"] for r in rows]))
    assert result["violation_rate"] == pytest.approx(np.mean([r["violation"] for r in rows]))
    for row in rows:  # a cost is drawn by an action: 1..80
        assert (row["first_cost"] is not None) == row["violation"]
        assert row["first_cost"] is None or 1 <= row["first_cost"] <= 80
    # The printed form names each layout that violated or missed the target, one a line.
    assert main(["eval", "--run", str(run), "--each-layout"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert "each of its distinct layouts once" in lines[0]
    listed = [r for r in rows if r["violation"] or not r["success"]]
    assert len(lines) == 1 + len(listed)
    for line, row in zip(lines[1:], listed):
        assert line.startswith(f"  target {row['target_index']}, "
                               f"obstacles {row['obstacle_indices']}:")
    assert main(["eval", "--run", str(run), "--each-layout", "--episodes", "3"]) == 2
    assert "leave out --episodes" in capsys.readouterr().err


def test_cli_pretrain_and_eval_json(data_dir, tmp_path, capsys):
    run = tmp_path / "cli-run"
    config_file = tmp_path / "tiny.yaml"
    save_yaml(tiny_config(), config_file)
    args = ["pretrain", "--data", str(data_dir), "--preset", str(config_file), "--obs", "state",
            "--algo", "fosp-no-ref", "--out", str(run), "--ckpt-every", "1"]
    assert main(args + ["--steps", "2"]) == 0
    agent, step = load_agent(run)
    assert step == 2 and agent.config.algo == "fosp-no-ref"
    assert main(args + ["--steps", "3", "--resume"]) == 0
    assert load_agent(run)[1] == 3
    capsys.readouterr()
    assert main(["eval", "--run", str(run), "--episodes", "1", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert set(result) == {"episodes", "success_rate", "violation_rate", "reward_return",
                           "cost_return", "success_ci", "violation_ci", "layouts"}
    # one episode: the interval of 0/1 is [0, 0.79], of 1/1 [0.21, 1]
    for name in ("success", "violation"):
        expected = [0.2065, 1.0] if result[f"{name}_rate"] == 1.0 else [0.0, 0.7935]
        assert result[f"{name}_ci"] == pytest.approx(expected, abs=1e-4)


@pytest.mark.parametrize(
    "args, message",
    [
        (["eval", "--run", "{tmp}/nothing", "--episodes", "1"], "run directory not found"),
        (["eval", "--run", "{tmp}", "--episodes", "1"], "not a run directory"),
        (["finetune", "--run", "{tmp}/nothing", "--task", "safereach-more-obstacles",
          "--out", "{tmp}/o"], "run directory not found"),
        (["finetune", "--run", "{data}/index.json", "--out", "{tmp}/o"],
         "index.json is a file, not a run directory"),
        (["pretrain", "--data", "{tmp}/missing", "--steps", "1", "--out", "{tmp}/r"],
         "does not exist"),
        (["pretrain", "--data", "{data}", "--preset", "nope", "--steps", "1", "--out", "{tmp}/r"],
         "no agent config preset"),
    ],
)
def test_cli_errors_are_one_line_without_traceback(args, message, data_dir, tmp_path, capsys):
    args = [a.format(tmp=tmp_path, data=data_dir) for a in args]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and err.count("\n") == 1


@pytest.mark.parametrize("command", [
    ["finetune", "--task", "safereach-more-obstacles", "--out", "{tmp}/o"],
    ["extract", "--out", "{tmp}/o"], ["export", "--out", "{tmp}/o"]])
def test_a_finetuned_directory_is_not_taken_for_a_pretrained_run(command, tmp_path, capsys):
    """It holds no checkpoint.pt; 'has this run been trained?' sent users the wrong way."""
    finetuned = tmp_path / "ft"
    finetuned.mkdir()
    (finetuned / "learner.pt").write_bytes(b"")
    (finetuned / "config.yaml").write_text("{}")
    command = [a.format(tmp=tmp_path) for a in command]
    assert main([*command, "--run", str(finetuned)]) == 2
    err = capsys.readouterr().err
    assert "ft: a fine-tuned directory, not a pretrained run; `fosp eval`" in err, err
    assert err.count("\n") == 1


def test_keep_every_keeps_earlier_weights_that_eval_step_loads(data_dir, tmp_path, capsys):
    run = tmp_path / "kept"
    config_file = tmp_path / "tiny.yaml"
    save_yaml(tiny_config(), config_file)
    assert main(["pretrain", "--data", str(data_dir), "--preset", str(config_file),
                 "--steps", "4", "--out", str(run), "--keep-every", "2"]) == 0
    assert sorted(p.name for p in (run / "checkpoints").glob("*")) == [
        "step_000002.pt", "step_000004.pt"]
    early, step = load_agent(run, step=2)
    late, _ = load_agent(run, step=4)
    latest, _ = load_agent(run)
    assert step == 2
    # The kept weights of the last step are the latest checkpoint's; step 2's are older.
    for a, b in zip(late.state_dict()["modules"].values(), latest.state_dict()["modules"].values()):
        assert torch.equal(a, b)
    assert any(not torch.equal(a, b) for a, b in zip(early.parameters(), late.parameters()))
    kept = torch.load(run / "checkpoints" / "step_000002.pt", weights_only=True)
    assert kept["agent"]["optimizers"] == {} and "replay" not in kept

    capsys.readouterr()
    assert main(["eval", "--run", str(run), "--step", "2", "--episodes", "1", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["episodes"] == 1
    assert main(["eval", "--run", str(run), "--step", "3", "--episodes", "1"]) == 2
    assert "no weights kept at step 3 (kept: 2, 4)" in capsys.readouterr().err


def test_cli_eval_of_a_run_without_checkpoint(tmp_path, capsys):
    run = tmp_path / "empty-run"
    run.mkdir()
    save_yaml(tiny_config(), run / CONFIG_NAME)
    assert main(["eval", "--run", str(run), "--episodes", "1"]) == 2
    assert "no checkpoint.pt" in capsys.readouterr().err


def test_export_keeps_float16_weights_that_act_like_the_run_and_cannot_be_resumed(
        data_dir, tmp_path, capsys):
    run, shipped = tmp_path / "run", tmp_path / "models" / "tiny"
    config = tiny_config()
    pretrain(data_dir, run, config, steps=2, progress=False)
    assert main(["export", "--run", str(run), "--out", str(shipped),
                 "--command", "fosp pretrain --out A", "--command", "fosp extract --run A"]) == 0
    assert "exported" in capsys.readouterr().out
    # Exporting over a run, its own included, would lose what --resume needs: refused.
    before = (run / CHECKPOINT_NAME).read_bytes()
    for out in (run, shipped):
        assert main(["export", "--run", str(run), "--out", str(out)]) == 2
        assert "already holds a checkpoint.pt" in capsys.readouterr().err
    assert (run / CHECKPOINT_NAME).read_bytes() == before

    full, small = torch.load(run / CHECKPOINT_NAME, weights_only=True), \
        torch.load(shipped / CHECKPOINT_NAME, weights_only=True)
    assert small["agent"]["optimizers"] == {} and "replay" not in small
    modules = small["agent"]["modules"]
    assert modules["world_model.rssm.gru.linear.weight"].dtype == torch.float16
    assert modules["actor_critic.lagrange"].dtype == torch.float64  # multipliers stay exact
    assert (shipped / CHECKPOINT_NAME).stat().st_size < (run / CHECKPOINT_NAME).stat().st_size / 4
    source = json.loads((shipped / "source.json").read_text())
    assert source["step"] == 2
    assert source["commands"] == ["fosp pretrain --out A", "fosp extract --run A"]

    # Loaded back as float32 weights within float16 rounding, with fresh optimisers.
    exported, step = load_agent(shipped)
    original, _ = load_agent(run)
    assert step == 2 and exported.config == config
    for (name, a), b in zip(original.state_dict()["modules"].items(),
                            exported.state_dict()["modules"].values()):
        assert a.dtype == b.dtype, name
        if a.is_floating_point():
            torch.testing.assert_close(a, b, rtol=1e-3, atol=1e-4, msg=name)
    assert exported.optimizers()["actor"].state_dict()["state"] == {}
    assert full["agent"]["optimizers"]["actor"]["state"]
    obs = {"state": np.linspace(-0.2, 0.6, 25).astype(np.float32)}
    np.testing.assert_allclose(exported.act(obs), original.act(obs), atol=2e-2)

    with pytest.raises(ValueError, match="cannot be resumed"):
        pretrain(data_dir, shipped, config, steps=3, resume=True, progress=False)


def test_pretrain_set_overrides_the_preset() -> None:
    from fosp.cli import build_parser, pretrain_config
    from fosp_core.util.config import ConfigError

    argv = ["pretrain", "--data", "d", "--steps", "1", "--out", "o", "--obs", "state",
            "--set", "fosp.cost_limit=2", "--set", "actor_critic.awr_normalise=false"]
    config = pretrain_config(build_parser().parse_args(argv))
    assert config.fosp.cost_limit == 2.0 and config.actor_critic.awr_normalise is False
    assert config.obs_mode == "state"  # the other options still apply
    with pytest.raises(ConfigError, match="fosp.cost_limt"):
        pretrain_config(build_parser().parse_args(argv + ["--set", "fosp.cost_limt=1"]))


def test_ctrl_c_stops_pretraining_with_a_checkpoint_to_resume(data_dir, tmp_path):
    config = tmp_path / "tiny.yaml"
    save_yaml(tiny_config(), config)
    out = tmp_path / "run"
    args = ["pretrain", "--data", str(data_dir), "--preset", str(config), "--out", str(out)]
    err = interrupt(fosp_process(*args, "--steps", "1000000", "--ckpt-every", "20"),
                    (out / CHECKPOINT_NAME).exists)  # the loop runs: step 20 was saved
    step = int(err.split("pretraining stopped at step ")[1].split(";")[0])
    assert step >= 20 and "continue with --resume" in err
    # The checkpoint is of the step it stopped at, not of the last periodic save.
    assert torch.load(out / CHECKPOINT_NAME, weights_only=True)["step"] == step
    resumed = fosp_process(*args, "--steps", str(step + 3), "--resume")
    _, err = resumed.communicate(timeout=120)
    assert resumed.returncode == 0, err
    assert torch.load(out / CHECKPOINT_NAME, weights_only=True)["step"] == step + 3

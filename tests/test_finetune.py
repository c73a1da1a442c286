"""Online fine-tuning: policy expansion, the learner and acting APIs, eq. 23, resume."""

import json
import threading
import time

import numpy as np
import pytest
import torch

from fosp_core.agent.actor_critic import obstacle_set_input, safe_success_targets
from fosp_core.agent.agent import Agent
from fosp_core.agent.math import online_policy_weights, symlog
from fosp_core.agent.networks import BoundedNormal
from fosp_core.agent.replay import SequenceReplay, hold_rows
from fosp_core.data.dataset import load_dataset
from fosp_core.learning.finetune import Learner, PexPolicy, expand_policy
from fosp_core.learning.finetune_run import control_counts
from fosp_core.learning.train import pretrain
from tests.agent_helpers import (
    fosp_process,
    interrupt,
    make_trajectory,
    strict_loads,
    tb_scalars,
    tiny_config,
    write_dataset,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def make_learner(data, pex=True, seed=0, config=None):
    config = config or tiny_config()
    torch.manual_seed(seed)
    agent = Agent(config)
    trajectories = load_dataset(data).trajectories
    replay = SequenceReplay(trajectories, config.batch_size, config.batch_length, "state", seed)
    return Learner(agent, replay, pex=pex)


def test_eq23_online_weights_by_hand():
    # u = 0.25, beta1 = 2, beta2 = 4, A^r = 0.5, A^c = 1: 0.75*2*0.5 - 0.25*4*1 = 0.75 - 1 = -0.25
    w = online_policy_weights(torch.tensor(0.5), torch.tensor(1.0), torch.tensor(0.25), 2.0, 4.0)
    assert w.item() == pytest.approx(-0.25)


def test_expansion_freezes_the_offline_policy_and_transfers_the_rest(pretrained):
    run, data = pretrained
    learner = Learner.from_run(run, data)
    frozen = {k: v.clone() for k, v in learner.offline_actor.state_dict().items()}
    critics_before = {k: v.clone() for k, v in learner.agent.actor_critic.critics.state_dict()
                      .items()}
    # the critics were transferred from the pretrained run, not re-initialised
    from fosp_core.learning.runs import load_agent
    pretrained_agent, _ = load_agent(run)
    for key, value in pretrained_agent.actor_critic.critics.state_dict().items():
        torch.testing.assert_close(critics_before[key], value)
    assert all(not p.requires_grad for p in learner.offline_actor.parameters())
    new_before = [p.clone() for p in learner.agent.actor_critic.actor.parameters()]
    learner.train(3)
    for key, value in learner.offline_actor.state_dict().items():
        torch.testing.assert_close(value, frozen[key])  # frozen stays frozen
    new_after = list(learner.agent.actor_critic.actor.parameters())
    assert any(not torch.equal(a, b) for a, b in zip(new_before, new_after))  # new one learns
    assert learner.agent.actor_critic.online


def test_new_policy_is_fresh_and_optimizer_follows_it():
    agent = Agent(tiny_config())
    old = agent.actor_critic.actor
    offline = expand_policy(agent)
    assert agent.actor_critic.actor is not old
    opt_params = {id(p) for g in agent.actor_critic.actor_opt.param_groups for p in g["params"]}
    assert opt_params == {id(p) for p in agent.actor_critic.actor.parameters()}
    assert all(torch.equal(a, b) for a, b in zip(offline.parameters(), old.parameters()))


def test_new_policy_can_start_as_a_copy():
    config = tiny_config()
    config.fosp.online_actor_init = "copy"
    agent = Agent(config)
    offline = expand_policy(agent)
    new = agent.actor_critic.actor
    assert new is not offline
    for a, b in zip(offline.parameters(), new.parameters()):
        assert torch.equal(a, b) and b.requires_grad and not a.requires_grad
    opt_params = {id(p) for g in agent.actor_critic.actor_opt.param_groups for p in g["params"]}
    assert opt_params == {id(p) for p in new.parameters()}
    with pytest.raises(ValueError, match="online_actor_init"):
        config.fosp.online_actor_init = "warm"
        config.__post_init__()


@pytest.mark.parametrize("pex", [True, False])
def test_the_finetuned_actor_learns_at_the_online_rate(pretrained, pex):
    run, data = pretrained
    lr = 1e-3  # the run's offline actor_lr is another
    learner = Learner.from_run(run, data, pex=pex, overrides={
        "fosp": {"online_actor_lr": lr, "online_actor_init": "copy"}})
    assert learner.agent.config.actor_critic.actor_lr != lr
    opt = learner.agent.actor_critic.actor_opt
    assert [group["lr"] for group in opt.param_groups] == [lr]
    if pex:
        # Adam's first step moves each weight by -lr * g / (|g| + eps), g its clipped gradient
        # (left in .grad): the bias corrections make m = g and v = g^2.
        eps = learner.agent.config.actor_critic.eps
        before = [p.detach().clone() for p in learner.agent.actor_critic.actor.parameters()]
        learner.train(1)
        for p, b in zip(learner.agent.actor_critic.actor.parameters(), before):
            expected = -lr * p.grad / (p.grad.abs() + eps)
            torch.testing.assert_close(p.detach() - b, expected, rtol=1e-3, atol=1e-7)
    # A restart keeps the online rate (the optimizer state saved with it holds one too).
    again = Learner.from_run(run, data, pex=pex, overrides={
        "fosp": {"online_actor_lr": lr, "online_actor_init": "copy"}})
    again.load_state_dict(learner.state_dict())
    assert [group["lr"] for group in again.agent.actor_critic.actor_opt.param_groups] == [lr]
    with pytest.raises(ValueError, match="online_actor_lr must be a finite number > 0"):
        learner.agent.config.fosp.online_actor_lr = 0.0
        learner.agent.config.__post_init__()


def _actor_after_one_step(online: bool, loss: str) -> list[torch.Tensor]:
    config = tiny_config()
    config.fosp.online_actor_loss = loss
    torch.manual_seed(0)
    agent = Agent(config)
    agent.actor_critic.online = online
    replay = SequenceReplay([make_trajectory(i) for i in range(3)], config.batch_size,
                            config.batch_length, "state", seed=0)
    torch.manual_seed(1)
    agent.train_step(replay.sample())
    return [p.detach().clone() for p in agent.actor_critic.actor.parameters()]


def test_in_sample_online_loss_is_eq19_on_the_replay():
    # The same agent, batch and random draws: online with 'in_sample' takes exactly the
    # offline step (eq. 19 on the replay's actions); online with 'eq23' takes another one.
    offline = _actor_after_one_step(False, "eq23")
    in_sample = _actor_after_one_step(True, "in_sample")
    eq23 = _actor_after_one_step(True, "eq23")
    assert all(torch.equal(a, b) for a, b in zip(offline, in_sample))
    assert not all(torch.equal(a, b) for a, b in zip(offline, eq23))
    config = tiny_config()
    config.fosp.online_actor_loss = "eq19"
    with pytest.raises(ValueError, match="online_actor_loss"):
        config.__post_init__()


def _outcome_trajectory(index: int, success: bool, violation: bool, touch: int = -1
                        ) -> dict[str, np.ndarray]:
    """make_trajectory with a chosen outcome (the target touched at row ``touch``, a cost at
    row 5); state[:, -1] holds the index to trace windows."""
    trajectory = make_trajectory(index)
    trajectory["reward"][:] = 0.0
    trajectory["cost"][:] = 0.0
    trajectory["reward"][touch] = float(success)
    trajectory["cost"][5] = float(violation)
    trajectory["state"][:, -1] = index
    return trajectory


def _safe_success_step(outcomes, loss="safe_success", hold_weight=0.0):
    """One online train step on a replay of trajectories with the given (success, violation),
    added with ``hold_weight``."""
    config = tiny_config(actor_critic={"entropy": 0.0}, fosp={"online_actor_loss": loss})
    torch.manual_seed(0)
    agent = Agent(config)
    agent.actor_critic.online = True
    trajectories = [_outcome_trajectory(i, *o) for i, o in enumerate(outcomes)]
    replay = SequenceReplay([], 16, config.batch_length, "state", seed=0)
    replay.add(trajectories, hold_weight=hold_weight)
    batch = replay.sample()
    before = [p.detach().clone() for p in agent.actor_critic.actor.parameters()]
    metrics = agent.train_step(batch)
    after = agent.actor_critic.actor.parameters()
    moved = any(not torch.equal(a, b) for a, b in zip(before, after))
    return batch, metrics, moved


def test_safe_success_online_loss_weighs_exactly_the_safe_successes():
    # Trajectory 0 reached the target safely, 1 reached it with a cost, 2 missed it. The
    # transitions out of rows 0..T-2 of each window are trained on (dataset_pairs); their
    # weight is 1 exactly when they belong to trajectory 0.
    batch, metrics, moved = _safe_success_step([(True, False), (True, True), (False, False)])
    which = batch["state"][:, :-1, -1].long()  # the trajectory of each transition's row
    expected = (which == 0).float().mean().item()
    assert 0.0 < expected < 1.0
    assert metrics["ac/awr_weight"] == pytest.approx(expected, abs=1e-6)
    assert moved
    # No safe success in the replay: every weight is 0 and (with eta = 0) the actor stays put,
    # where eq. 19 on the same replay moves it.
    unsafe = [(True, True), (False, False)]
    _, metrics, moved = _safe_success_step(unsafe)
    assert metrics["ac/awr_weight"] == 0.0 and not moved
    assert _safe_success_step(unsafe, "in_sample")[2]


def test_safe_success_targets_by_hand():
    # Row 0: a safe success's action, cloned as it is with weight 1. Row 1: taken after the
    # touch (hold 2), cloned towards zero with weight 2 although its trajectory was safe.
    # Row 2: a violation's action after the touch, towards zero with weight 2. Row 3: a
    # violation's action before the touch, weight 0.
    action = torch.tensor([[0.5, -0.5, 0, 0, 0, 0.1], [0.3, 0.3, 0, 0, 0, 0],
                           [-0.2, 0.4, 0, 0, 0, 0], [0.9, 0, 0, 0, 0, 0]])
    target, weight = safe_success_targets(action, torch.tensor([1.0, 1.0, 0.0, 0.0]),
                                          torch.tensor([0.0, 2.0, 2.0, 0.0]))
    assert torch.equal(target[0], action[0]) and torch.equal(target[3], action[3])
    assert torch.equal(target[1:3], torch.zeros(2, 6))
    assert weight.tolist() == [1.0, 2.0, 2.0, 0.0]


def test_hold_weight_learns_from_trajectories_that_violated_after_the_touch():
    # Two trajectories that touched the target at row 3 and then drew a cost at row 5: no
    # safe success, so without the hold weight nothing is cloned and the actor stays put;
    # with it, each action taken from row 3 on is cloned towards zero with weight 2.
    unsafe = [(True, True, 3), (True, True, 3)]
    _, metrics, moved = _safe_success_step(unsafe)
    assert metrics["ac/awr_weight"] == 0.0 and not moved
    batch, metrics, moved = _safe_success_step(unsafe, hold_weight=2.0)
    held = batch["hold"][:, 1:][~batch["is_first"][:, 1:]]
    assert set(held.unique().tolist()) == {0.0, 2.0}
    assert metrics["ac/awr_weight"] == pytest.approx(held.mean().item(), abs=1e-6)
    assert moved


def test_safe_success_online_loss_needs_the_replay_flag():
    config = tiny_config(fosp={"online_actor_loss": "safe_success"})
    agent = Agent(config)
    agent.actor_critic.online = True
    batch = SequenceReplay([make_trajectory(i) for i in range(2)], 4, config.batch_length,
                           "state", seed=0).sample()
    del batch["safe_success"]
    with pytest.raises(KeyError, match="safe_success"):
        agent.train_step(batch)


def test_pex_policy_takes_eq21_22_constants_from_the_config(pretrained):
    # Q-hat* = sum_{t=0}^{2} 0.5^t * 2 = 3.5 and C-hat* = 0.5 * 1.75 = 0.875 (eq. 22); the
    # inverse temperature 3 replaces the default 10 in eq. 21.
    run, data = pretrained
    learner = Learner.from_run(run, data)
    config = learner.agent.config
    f = config.fosp
    f.reward_max, f.cost_max, f.pex_horizon, f.pex_temperature = 2.0, 0.5, 2, 3.0
    config.actor_critic.discount = 0.5
    policy = PexPolicy(config, learner.snapshot(), seed=0)
    assert (policy.reward_bound, policy.cost_bound) == (pytest.approx(3.5), pytest.approx(0.875))
    policy.reset()
    step = policy.step({"state": make_trajectory(0)["state"][0]})
    expected = np.exp(3 * step.q_tilde) / np.exp(3 * step.q_tilde).sum()
    np.testing.assert_allclose(step.probabilities, expected, rtol=1e-4)


def test_pex_policy_chooses_with_eq21_and_reports_values(pretrained):
    run, data = pretrained
    learner = Learner.from_run(run, data)
    policy = PexPolicy(learner.agent.config, learner.snapshot(), seed=0)
    policy.reset()
    obs = {"state": make_trajectory(0)["state"][0]}
    chosen = set()
    for _ in range(30):
        step = policy.step(obs)
        assert step.action.shape == (6,) and np.all(np.abs(step.action) <= 1)
        assert step.probabilities.sum() == pytest.approx(1.0, abs=1e-5)
        # eq. 21 from the reported eq. 22 values
        expected = np.exp(10 * step.q_tilde) / np.exp(10 * step.q_tilde).sum()
        np.testing.assert_allclose(step.probabilities, expected, rtol=1e-4)
        chosen.add(step.chosen)
    assert chosen <= {"offline", "online"}
    greedy = policy.step(obs, deterministic=True)
    assert greedy.chosen == ("offline", "online")[int(np.argmax(greedy.probabilities))]


def test_direct_finetuning_has_no_offline_policy(pretrained):
    run, data = pretrained
    learner = Learner.from_run(run, data, pex=False)
    assert learner.offline_actor is None
    policy = PexPolicy(learner.agent.config, learner.snapshot())
    policy.reset()
    assert policy.step({"state": np.zeros(25, np.float32)}).chosen == "online"
    with pytest.raises(ValueError, match="Q critics"):
        Learner(Agent(tiny_config(algo="dreamer")), learner.replay, pex=True)


def test_a_run_without_q_critics_acts_directly_or_says_why_it_cannot_expand(tmp_path):
    data = write_dataset(tmp_path / "data", episodes=3)
    pretrain(data, tmp_path / "run", tiny_config(algo="safedreamer"), steps=1, progress=False)
    with pytest.raises(ValueError, match="needs Q critics; algo 'safedreamer'"):
        PexPolicy.from_run(tmp_path / "run")  # PEX asked for: refused before any step
    policy = PexPolicy.from_run(tmp_path / "run", pex=None)  # the policy node's start
    assert policy.offline_actor is None
    policy.reset()
    assert policy.step({"state": make_trajectory(0)["state"][0]}).chosen == "online"


def test_finetuning_from_a_directory_without_trajectories_is_an_error(pretrained, tmp_path):
    """The replay starts from the offline dataset (Algorithm 1): a wrong --data must not
    fine-tune on the new trajectories alone."""
    run, _ = pretrained
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="empty: no readable trajectories"):
        Learner.from_run(run, tmp_path / "empty")


def test_add_trajectory_grows_the_one_replay(pretrained):
    run, data = pretrained
    learner = Learner.from_run(run, data)
    before = len(learner.replay)
    learner.add_trajectory(make_trajectory(99))
    assert len(learner.replay) == before + 1 and learner.trajectories == 1
    stats = learner.train(2)
    assert stats["steps"] == 2 and stats["duration_s"] > 0
    assert np.isfinite(stats["model/loss"]) and np.isfinite(stats["ac/actor_loss"])


def test_online_success_weight_counts_the_new_safe_successes_more(pretrained):
    run, data = pretrained
    learner = Learner.from_run(run, data, overrides={"fosp": {"online_success_weight": 3.0}})
    offline = len(learner.replay)
    learner.add_trajectory(_outcome_trajectory(90, success=True, violation=False))
    learner.add_trajectory(_outcome_trajectory(91, success=True, violation=True))
    new_safe, new_unsafe = learner.replay._trajectories[offline:]
    assert np.all(new_safe["safe_success"] == 3.0) and np.all(new_unsafe["safe_success"] == 0.0)
    demos = {float(t["safe_success"][0]) for t in learner.replay._trajectories[:offline]}
    assert demos == {0.0, 1.0}  # the dataset's safe success keeps weight 1
    with pytest.raises(ValueError, match="online_success_weight"):
        tiny_config(fosp={"online_success_weight": -1.0})


def test_online_hold_weight_marks_every_trajectory_after_its_touch(pretrained):
    run, data = pretrained
    overrides = {"fosp": {"online_actor_loss": "safe_success", "online_hold_weight": 2.0}}
    learner = Learner.from_run(run, data, overrides=overrides)
    offline = len(learner.replay)
    learner.add_trajectory(_outcome_trajectory(90, success=True, violation=True, touch=3))
    new = learner.replay._trajectories[offline]
    assert new["hold"].tolist() == [0.0] * 4 + [2.0] * (len(new["hold"]) - 4)
    demos = learner.replay._trajectories[:offline]
    assert any(t["reward"].any() for t in demos)
    for demo in demos:  # the dataset is relabelled alike
        np.testing.assert_array_equal(demo["hold"], hold_rows(demo["reward"], 2.0))
    with pytest.raises(ValueError, match="online_hold_weight"):
        tiny_config(fosp={"online_actor_loss": "safe_success", "online_hold_weight": -1.0})
    with pytest.raises(ValueError, match="online_hold_weight needs"):
        tiny_config(fosp={"online_hold_weight": 1.0})  # the default loss is eq23


def test_snapshot_under_concurrent_training_is_consistent(tmp_path):
    data = write_dataset(tmp_path / "data", episodes=4)
    learner = make_learner(data)
    snapshots = []
    trainer = threading.Thread(target=learner.train, args=(20,))
    trainer.start()
    while trainer.is_alive():
        snapshots.append(learner.snapshot())
    trainer.join()
    final = learner.snapshot()
    assert len(snapshots) >= 2 and final["step"] == 20
    steps = [s["step"] for s in snapshots]
    assert steps == sorted(steps)  # taken between steps, in order
    policy = PexPolicy(learner.agent.config)
    for snap in snapshots + [final]:
        policy.load_weights(snap)  # every snapshot is a complete set of weights
        for value in snap["agent"].values():
            assert torch.isfinite(value.float()).all()
    # the last snapshot equals the learner's weights exactly
    modules = learner.agent.state_dict()["modules"]
    for key, value in final["agent"].items():
        torch.testing.assert_close(value, modules[key])
    assert not any("slow_critics" in key or "decoder" in key for key in final["agent"])


def test_resume_gives_the_same_next_losses(tmp_path):
    data = write_dataset(tmp_path / "data", episodes=4)
    a = make_learner(data)
    a.add_trajectory(make_trajectory(50))
    a.train(2)
    a.save(tmp_path / "learner.pt")
    continued = a.train(1)

    b = make_learner(data, seed=123)  # different init: everything must come from the file
    b.add_trajectory(make_trajectory(50))
    b.load(tmp_path / "learner.pt")
    resumed = b.train(1)
    for key in ("model/loss", "ac/actor_loss", "ac/critic_loss"):
        assert resumed[key] == pytest.approx(continued[key], rel=1e-6), key
    state = torch.load(tmp_path / "learner.pt", weights_only=True)
    assert state["trajectories"] == 1 and state["steps"] == 2


def test_cli_finetune_reports_before_during_after(pretrained, tmp_path, capsys):
    from fosp.cli import main

    run, _data = pretrained  # the run remembers its dataset (dataset.txt)
    out = tmp_path / "ft"
    assert main(["finetune", "--run", str(run), "--task", "safereach-more-obstacles",
                 "--trajectories", "2", "--grad-steps", "2", "--eval-episodes", "1",
                 "--keep-every", "1", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    for row in ("before", "during", "after", "cost regret"):
        assert row in text
    report = strict_loads((out / "report.json").read_text())
    assert report["during"]["episodes"] == 2 and len(report["log"]) == 2
    assert "(95% CI)" in text
    for row in ("before", "during", "after"):
        for name in ("success", "violation"):
            low, high = report[row][f"{name}_ci"]
            assert low <= report[row][f"{name}_rate"] <= high and high - low > 0.5  # <= 2 episodes
    assert 0.0 <= report["log"][-1]["online_share"] <= 1.0
    margins = [entry["choice_margin"] for entry in report["log"]]
    assert all(0.0 <= m <= 1.0 for m in margins)
    assert f"per action: {np.mean(margins):.3f}" in text
    # Each round's training statistics: in short in the log, all of them in OUT/tb.
    assert {"loss", "actor_loss", "lagrange", "v_cost"} <= set(report["log"][-1]["train"])
    actor_loss = tb_scalars(out / "tb", "finetune/ac/actor_loss")
    assert [step for step, _ in actor_loss] == [2, 4]
    assert actor_loss[-1][1] == pytest.approx(report["log"][-1]["train"]["actor_loss"])
    violation = [value for _, value in tb_scalars(out / "tb", "trajectory/violation")]
    assert violation == [float(entry["violation"]) for entry in report["log"]]
    online = load_dataset(out / "online_data", strict=True).trajectories
    assert len(online) == 2  # stored before training
    for traj, entry in zip(online, report["log"]):  # one recorded choice per action
        assert len(traj.meta["policy"]) == traj.length - 1
        assert set(traj.meta["policy"]) <= {0, 1}
        assert np.mean(traj.meta["policy"]) == pytest.approx(entry["online_share"])
    assert (out / "finetune.png").read_bytes()[:4] == b"\x89PNG"
    assert torch.load(out / "learner.pt", weights_only=True)["trajectories"] == 2
    # `fosp compare` reads a real report (and its config.yaml), not only hand-written ones.
    assert main(["compare", str(out)]) == 0
    violating = round(report["during"]["violation_rate"] * 2)
    table = capsys.readouterr().out
    assert "safereach-more-obstacles" in table and f"  {violating}/2 ({violating})," in table
    # `fosp eval` on the output evaluates the fine-tuned policy: on the after row's layouts
    # it gives that row, and so do the weights kept after the last round.
    for kept in ([], ["--round", "2"]):
        assert main(["eval", "--run", str(out), "--task", "safereach-more-obstacles",
                     "--episodes", "1", "--json", *kept]) == 0
        evaluated = strict_loads(capsys.readouterr().out)
        for key in ("success_rate", "violation_rate", "reward_return", "cost_return",
                    "online_share", "layouts", "lead_in_offline_share"):
            assert evaluated[key] == pytest.approx(report["after"][key], nan_ok=True), (
                kept, key)
    assert main(["eval", "--run", str(out), "--task", "safereach-more-obstacles",
                 "--episodes", "1"]) == 0
    said = f"eq. 21 chose the online policy for {report['after']['online_share']:.0%} of all"
    assert said in capsys.readouterr().out
    # --each-layout on a fine-tuned run: one episode on each layout given. On the after
    # row's layout, reset with its seed, it repeats that row's episode.
    from fosp_core.envs.layouts import all_layouts
    from fosp_core.envs.safereach import SafeReachEnv
    from fosp_core.envs.tasks import TASKS
    from fosp_core.learning.finetune_run import EVAL_SEED_OFFSET, evaluate_policy, finetuned_policy

    policy = finetuned_policy(out)
    env = SafeReachEnv(task="safereach-more-obstacles", obs_mode=policy.config.obs_mode)
    env.reset(seed=EVAL_SEED_OFFSET)
    after = env.layout
    other = next(layout for layout in all_layouts(TASKS["safereach-more-obstacles"])
                 if layout.key != after.key)
    evaluated = evaluate_policy(env, policy, 0, EVAL_SEED_OFFSET, layouts=[after, other])
    env.close()
    assert evaluated["episodes"] == evaluated["layouts"] == 2
    rows = evaluated["per_layout"]
    assert (rows[0]["success"], rows[0]["violation"]) == (
        report["after"]["success_rate"] == 1.0, report["after"]["violation_rate"] == 1.0)
    assert (rows[1]["target_index"], tuple(rows[1]["obstacle_indices"])) == other.key
    first = torch.load(out / "rounds" / "round_0001.pt", weights_only=True)["agent"]
    last = torch.load(out / "rounds" / "round_0002.pt", weights_only=True)["agent"]
    assert any(not torch.equal(first[k], last[k]) for k in first)  # round 2 trained on
    assert main(["eval", "--run", str(out), "--round", "5"]) == 2
    assert "no weights kept after round 5 (kept: [1, 2])" in capsys.readouterr().err
    assert main(["eval", "--run", str(out), "--step", "3"]) == 2
    assert "a fine-tuned run keeps rounds (--round)" in capsys.readouterr().err
    assert main(["eval", "--run", str(run), "--round", "1"]) == 2
    assert "--round needs a fine-tuned run" in capsys.readouterr().err


def test_finetune_resume_continues_exactly_where_it_stopped(pretrained, tmp_path, capsys):
    # Sampled acting (the default): the resume must also restore the policy's random state.
    import shutil

    from fosp.cli import main
    from fosp_core.learning.finetune_run import finetune

    run, data = pretrained
    task = "safereach-target-shape"

    def fine_tune(out, trajectories, resume=False):
        return finetune(run, task, trajectories, 2, out, data=data, eval_episodes=1,
                        progress=False, resume=resume)

    whole = fine_tune(tmp_path / "whole", 3)
    fine_tune(tmp_path / "stopped", 1)  # as if stopped after its first round
    resumed = fine_tune(tmp_path / "stopped", 3, resume=True)
    # A stop between storing a trajectory and its round: the stored one is trained on.
    fine_tune(tmp_path / "crashed", 1)
    shutil.copy(tmp_path / "whole" / "online_data" / "traj_000001.npz",
                tmp_path / "crashed" / "online_data")
    recovered = fine_tune(tmp_path / "crashed", 3, resume=True)

    def without_timing(report):
        return [{k: v for k, v in entry.items() if k != "train_s"} for entry in report["log"]]

    expected = load_dataset(tmp_path / "whole" / "online_data", strict=True).trajectories
    final = torch.load(tmp_path / "whole" / "learner.pt", weights_only=True)
    assert without_timing(resumed) == without_timing(whole)
    # The resumed run's curves go on from its first round, as if it had never stopped.
    for tag in ("finetune/ac/actor_loss", "trajectory/success"):
        assert (tb_scalars(tmp_path / "stopped" / "tb", tag)
                == tb_scalars(tmp_path / "whole" / "tb", tag)), tag
    assert resumed["before"] == whole["before"] and resumed["during"] == whole["during"]
    stored = load_dataset(tmp_path / "stopped" / "online_data", strict=True).trajectories
    for a, b in zip(stored, expected, strict=True):
        np.testing.assert_array_equal(a.arrays["action"], b.arrays["action"])
    state = torch.load(tmp_path / "stopped" / "learner.pt", weights_only=True)
    assert state["steps"] == final["steps"] == 6
    for key, value in final["agent"]["modules"].items():
        assert torch.equal(state["agent"]["modules"][key], value), key
    # The crashed run trains on the stored trajectory instead of rolling one out, so its
    # random state departs from the whole run's after that (sampled acting draws from it).
    # Round 2's training draws differ too (the whole run's rollout drew from torch's global
    # random state in between), though it trains on the same trajectory.
    assert without_timing(recovered)[:1] == without_timing(whole)[:1]
    assert ({k: v for k, v in without_timing(recovered)[1].items() if k != "train"}
            == {k: v for k, v in without_timing(whole)[1].items() if k != "train"})
    assert len(load_dataset(tmp_path / "crashed" / "online_data").trajectories) == 3
    assert torch.load(tmp_path / "crashed" / "learner.pt", weights_only=True)["steps"] == 6

    # Running again into a used --out, resuming with other arguments or with nothing saved.
    args = ["finetune", "--run", str(run), "--data", str(data), "--task", task,
            "--grad-steps", "2", "--eval-episodes", "1", "--trajectories", "3"]
    assert main(args + ["--out", str(tmp_path / "whole")]) == 2
    assert "already holds a fine-tuning run; continue it with --resume" in capsys.readouterr().err
    assert main(args + ["--out", str(tmp_path / "whole"), "--resume", "--seed", "1"]) == 2
    assert "changed: seed was 0, now 1" in capsys.readouterr().err
    assert main(args[:-1] + ["2", "--out", str(tmp_path / "whole"), "--resume"]) == 2
    assert "3 trajectories are done already" in capsys.readouterr().err
    assert main(args + ["--out", str(tmp_path / "empty"), "--resume"]) == 2
    assert "nothing to resume" in capsys.readouterr().err


def test_ctrl_c_stops_finetuning_between_rounds_and_resume_finishes_it(pretrained, tmp_path):
    run, data = pretrained
    out = tmp_path / "ft"
    args = ["finetune", "--run", str(run), "--data", str(data), "--task",
            "safereach-target-shape", "--grad-steps", "20", "--eval-episodes", "1",
            "--out", str(out)]
    err = interrupt(fosp_process(*args, "--trajectories", "1000"),  # in its second round:
                    lambda: len(list((out / "online_data").glob("traj_*.npz"))) >= 2)
    rounds = int(err.split("fine-tuning stopped after ")[1].split(" of 1000")[0])
    assert rounds >= 1 and "continue with --resume" in err
    stored = len(list((out / "online_data").glob("traj_*.npz")))
    assert stored in (rounds, rounds + 1)  # a trajectory stored but not trained on is kept
    resumed = fosp_process(*args, "--trajectories", str(rounds + 2), "--resume")
    _, err = resumed.communicate(timeout=120)
    assert resumed.returncode == 0, err
    report = json.loads((out / "report.json").read_text())
    assert [e["trajectory"] for e in report["log"]] == list(range(1, rounds + 3))
    assert len(list((out / "online_data").glob("traj_*.npz"))) == rounds + 2


@pytest.fixture(scope="module")
def uninterrupted(pretrained, tmp_path_factory):
    """A fine-tuning run that never stopped: the reference for the resumed ones."""
    out = tmp_path_factory.mktemp("uninterrupted") / "ft"
    proc = fosp_process(*finetune_args(pretrained, out))
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    return out


def finetune_args(pretrained, out) -> list[str]:
    run, data = pretrained
    return ["finetune", "--run", str(run), "--data", str(data), "--task",
            "safereach-target-shape", "--grad-steps", "30", "--eval-episodes", "1",
            "--trajectories", "3", "--out", str(out)]


STOPS = {  # Ctrl-C as soon as this file appears, then after this many seconds
    "in the evaluation before": ("config.yaml", 0.0),
    "in the first rollout": ("learner.pt", 0.0),
    "in the first round's training": ("online_data/traj_000000.npz", 0.0),
    "later": ("online_data/traj_000001.npz", 0.4),
}


@pytest.mark.parametrize("stop", list(STOPS))
def test_finetune_resume_is_exact_after_a_stop_at_any_point(stop, pretrained, uninterrupted,
                                                              tmp_path):
    """Stopped anywhere (evaluating, collecting a trajectory, in a round, between rounds) and
    resumed, a run ends bit for bit where the one that never stopped ends: the same
    trajectories, report and learner."""
    out = tmp_path / "ft"
    marker, delay = STOPS[stop]

    def ready() -> bool:
        if not (out / marker).exists():
            return False
        time.sleep(delay)
        return True

    interrupt(fosp_process(*finetune_args(pretrained, out)), ready, timeout=300)
    resumed = fosp_process(*finetune_args(pretrained, out), "--resume")
    _, err = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, err

    def log(directory):
        report = json.loads((directory / "report.json").read_text())
        return [{k: v for k, v in e.items() if k != "train_s"} for e in report["log"]]

    assert log(out) == log(uninterrupted)
    got = load_dataset(out / "online_data", strict=True).trajectories
    want = load_dataset(uninterrupted / "online_data", strict=True).trajectories
    for a, b in zip(got, want, strict=True):
        np.testing.assert_array_equal(a.arrays["action"], b.arrays["action"])
    state = torch.load(out / "learner.pt", weights_only=True)
    final = torch.load(uninterrupted / "learner.pt", weights_only=True)
    differing = [k for k, v in final["agent"]["modules"].items()
                 if not torch.equal(state["agent"]["modules"][k], v)]
    assert not differing, f"{len(differing)} tensors differ, e.g. {differing[:3]}"
    assert torch.equal(state["rng"], final["rng"]) and state["steps"] == final["steps"]


def test_lead_in_offline_share_counts_the_actions_up_to_the_first_cost():
    from fosp_core.learning.finetune_run import lead_in_offline_share

    def episode(costs):
        return {"cost": np.array([0.0, *costs], np.float32)}

    # First cost at row 7: actions 3..7 (policy[2:7]) lead into it, offline at 2 of them;
    # the later costs do not count.
    a = (episode([0, 0, 0, 0, 0, 0, 1, 1, 0, 1]), [0, 0, 1, 0, 1, 0, 1, 0, 0, 0])
    # First cost at row 2: only two actions before it, both offline.
    b = (episode([0, 1, 0, 0]), [0, 0, 1, 1])
    safe = (episode([0, 0, 0, 0]), [0, 0, 0, 0])  # no violation: not counted
    assert lead_in_offline_share([a, b, safe]) == pytest.approx(4 / 7)
    assert lead_in_offline_share([a], actions=1) == 0.0  # the online policy drew the cost
    assert np.isnan(lead_in_offline_share([safe]))
    assert np.isnan(lead_in_offline_share([(episode([1]), [])]))  # choices not recorded
    with pytest.raises(ValueError, match="3 policy choices for 4 actions"):
        lead_in_offline_share([(episode([0, 1, 0, 0]), [0, 0, 1])])


def test_pex_ranking_benchmark_runs(pretrained):
    import subprocess
    import sys
    from pathlib import Path

    run, _ = pretrained
    out = subprocess.run([sys.executable, "benchmarks/pex_ranking.py", "--run", str(run),
                          "--episodes", "1"], cwd=Path(__file__).resolve().parents[1],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    share = out.stdout.split("critics prefer the offline proposal at ")[1].split("%")[0]
    assert 0 <= int(share) <= 100


def test_pex_guard_benchmark_pins_the_draw_and_restores_the_library(pretrained):
    import subprocess
    import sys
    from pathlib import Path

    run, _ = pretrained
    out = subprocess.run([sys.executable, "benchmarks/pex_guard.py", "--run", str(run),
                          "--episodes", "1", "--settings", "offline,online,10:1"],
                         cwd=Path(__file__).resolve().parents[1], capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    rows = {line.split()[0]: line.split()[1:] for line in out.stdout.splitlines()[2:5]}
    assert rows["offline"][2] == "0%" and rows["online"][2] == "100%"  # the pinned draws
    assert rows["offline"][3] == rows["online"][3] == "1.000"
    assert 0.0 <= float(rows["10:1"][3]) <= 1.0


def test_finetuning_config_overrides(pretrained):
    run, data = pretrained
    overrides = {"fosp": {"online_actor_init": "copy", "pex_temperature": 50.0}}
    learner = Learner.from_run(run, data, overrides=overrides)
    f = learner.agent.config.fosp
    assert (f.online_actor_init, f.pex_temperature) == ("copy", 50.0)
    for a, b in zip(learner.offline_actor.parameters(),
                    learner.agent.actor_critic.actor.parameters()):
        assert torch.equal(a, b)  # the new actor is the copy the override asked for


@pytest.mark.parametrize("deterministic", [True, False])
def test_finetune_deterministic_acting_takes_the_policy_mode(pretrained, tmp_path, deterministic):
    # The first fine-tuning trajectory acts with the pretrained weights on layout 0: with
    # deterministic acting it is the pretrained policy's deterministic episode there, sampled
    # acting departs from it.
    from fosp_core.envs.safereach import SafeReachEnv
    from fosp_core.learning.finetune_run import finetune, rollout

    run, data = pretrained
    report = finetune(run, "safereach-target-shape", 1, 1, tmp_path / "ft", data=data,
                      pex=False, eval_episodes=1, progress=False, deterministic=deterministic)
    assert report["deterministic"] is deterministic
    recorded = load_dataset(tmp_path / "ft" / "online_data", strict=True).trajectories[0].arrays
    env = SafeReachEnv(task="safereach-target-shape", obs_mode="state")
    try:
        expected, _, _ = rollout(env, PexPolicy.from_run(run, pex=False), 0, True, False)
    finally:
        env.close()
    n = min(len(expected["action"]), len(recorded["action"]))
    same = np.allclose(recorded["action"][:n], expected["action"][:n], atol=1e-6)
    assert same is deterministic
    # The offline control rolled out the pretrained policy alone on the same layout, acting
    # the same way: deterministically, the very episode fine-tuning acted.
    entry = report["log"][0]
    assert report["offline_control"] == control_counts(report["log"])
    if deterministic:
        assert entry["offline_violation"] == bool(expected["cost"].any()) == entry["violation"]
        assert report["offline_control"] == {"trajectories": 1, "violating": int(
            entry["violation"]), "added": 0, "avoided": 0}


def test_offline_control_is_the_pretrained_policy_and_leaves_the_random_state(pretrained):
    from fosp_core.envs.safereach import SafeReachEnv
    from fosp_core.learning.finetune_run import OfflineControl, rollout
    from fosp_core.learning.runs import load_run_config

    run, _ = pretrained
    before = torch.get_rng_state()
    control = OfflineControl(run, load_run_config(run), None, "cpu", seed=0)
    env = SafeReachEnv(task="safereach-more-obstacles", obs_mode="state")
    try:
        flags = [control.violates(env, episode, False, False) for episode in range(4)]
        assert torch.equal(torch.get_rng_state(), before)  # fine-tuning draws as without it
        expected = []
        policy = PexPolicy.from_run(run, pex=False)
        for episode in range(4):  # sampled acting, from the episode seed
            torch.manual_seed(episode)
            arrays, _, _ = rollout(env, policy, episode, False, False)
            expected.append(bool(arrays["cost"].any()))
    finally:
        env.close()
    assert flags == expected


def test_control_counts_by_hand():
    log = [{"violation": v, "offline_violation": o}
           for v, o in [(True, True), (True, False), (False, True), (False, False),
                        (True, False)]]
    # offline violated on 2; fine-tuning violated where it did not on 2, avoided 1
    assert control_counts(log) == {"trajectories": 5, "violating": 2, "added": 2, "avoided": 1}
    assert control_counts([{"violation": True}]) is None  # a run from before the control


def test_bounded_normal_actor_through_pretraining_expansion_and_acting(tmp_path):
    # actor_dist "normal": the offline actor, PEX's new actor and the acting copy all use it
    # (one build_actor), and fine-tuning runs.
    data = write_dataset(tmp_path / "data", episodes=3)
    config = tiny_config(actor_critic={"horizon": 5, "actor_dist": "normal"})
    pretrain(data, tmp_path / "run", config, steps=2, progress=False)
    learner = Learner.from_run(tmp_path / "run", data)
    features = torch.zeros(1, learner.agent.world_model.feat_dim)
    assert type(learner.agent.actor_critic.actor(features)) is BoundedNormal
    assert type(learner.offline_actor(features)) is BoundedNormal
    policy = PexPolicy(learner.agent.config, learner.snapshot(), seed=0)
    assert type(policy.offline_actor(features)) is BoundedNormal  # not its truncated subclass
    policy.reset()
    step = policy.step({"state": make_trajectory(0)["state"][0]}, deterministic=True)
    assert step.action.shape == (6,) and np.all(np.abs(step.action) <= 1)
    learner.add_trajectory(make_trajectory(7))
    assert np.isfinite(learner.train(2)["ac/actor_loss"])


@pytest.mark.parametrize(("actor_input", "online_actor_loss"), [
    ("observation", "eq23"), ("observation", "in_sample"), ("obstacle_set", "in_sample"),
    ("obstacle_set", "safe_success")])
def test_state_actor_inputs_through_expansion_acting_and_finetuning(tmp_path, actor_input,
                                                                    online_actor_loss):
    # An actor that reads the state ("observation": the standardised state in symlog space;
    # "obstacle_set": the same state as a set): both of PEX's actors read it when acting, and
    # fine-tuning trains on it with either online loss.
    data = write_dataset(tmp_path / "data", episodes=3)
    config = tiny_config(actor_critic={"actor_input": actor_input},
                         fosp={"online_actor_loss": online_actor_loss})
    pretrain(data, tmp_path / "run", config, steps=2, progress=False)
    learner = Learner.from_run(tmp_path / "run", data)
    learner.add_trajectory(make_trajectory(7))
    assert np.isfinite(learner.train(2)["ac/actor_loss"])
    policy = PexPolicy(learner.agent.config, learner.snapshot(), seed=0)
    obs = make_trajectory(0)["state"][3]
    normalizer = policy.agent.normalizer
    standard = ((torch.as_tensor(obs) - normalizer.mean) / normalizer.std)[None]
    if actor_input == "observation":
        actor_input = symlog(standard)
    else:
        actor_input = obstacle_set_input(standard, torch.as_tensor(obs)[None])
    with torch.no_grad():
        offline = policy.offline_actor(actor_input).mode
        online = policy.agent.actor_critic.actor(actor_input).mode
    assert not torch.allclose(offline, online)  # two different actors, so the test can tell
    policy.reset()
    step = policy.step({"state": obs}, deterministic=True)
    chosen = offline if step.chosen == "offline" else online
    assert np.allclose(step.action, chosen[0].numpy(), atol=1e-6)


def test_eval_says_which_policy_led_into_the_violations(pretrained):
    # With the offline actor a copy of the online one, both propose the same action, eq. 21
    # ties and its most likely choice is index 0: the offline policy takes every action, so
    # it led into every violation. Without expansion the online policy takes them all.
    from fosp_core.envs.safereach import SafeReachEnv
    from fosp_core.learning.finetune_run import evaluate_policy

    run, _ = pretrained
    env = SafeReachEnv(task="safereach-more-obstacles", obs_mode="state")
    tied = PexPolicy.from_run(run, pex=True)
    tied.offline_actor.load_state_dict(tied.agent.actor_critic.actor.state_dict())
    direct = PexPolicy.from_run(run, pex=False)
    results = [evaluate_policy(env, policy, 6, 0) for policy in (tied, direct)]
    env.close()
    for result, expansion, share, lead_in in ((results[0], True, 0.0, 1.0),
                                              (results[1], False, 1.0, 0.0)):
        assert result["violation_rate"] > 0  # the tiny agent collides: there is a lead-in
        assert result["expansion"] is expansion
        assert result["online_share"] == share
        assert result["lead_in_offline_share"] == lead_in

"""The foresight stop: the world model's imagined cost of the policy's own path halts the arm."""

import numpy as np
import pytest
import torch

from fosp_core.agent.foresight import foreseen_cost, imagined_step_costs, veto
from fosp_core.agent.networks import TwoHotDist
from fosp_core.learning.finetune import Learner, PexPolicy
from tests.agent_helpers import make_trajectory, tiny_config

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _policy(pretrained, stop: float, pex: bool = False, veto: bool = False) -> PexPolicy:
    run, data = pretrained
    fosp = {"foresight_stop": stop, "foresight_veto": veto}
    learner = Learner.from_run(run, data, pex=pex, overrides={"fosp": fosp})
    return PexPolicy(learner.agent.config, learner.snapshot(), seed=0)


def _constant_cost_head(policy: PexPolicy, bin_index: int) -> float:
    """Make the cost head predict the same cost everywhere; returns that cost."""
    out = policy.agent.world_model.cost_head.mlp.out
    with torch.no_grad():
        out.weight.zero_()
        out.bias.fill_(-30.0)
        out.bias[bin_index] = 30.0
        bins = policy.agent.world_model.cost_head.bins
        return float(TwoHotDist(out.bias[None], bins).mean()[0])


def test_foreseen_cost_is_the_mean_over_rollouts_of_the_worst_step():
    # Rollout 1 peaks at 0.6 (step 2), rollout 2 at 0.9 (step 1): (0.6 + 0.9) / 2 = 0.75.
    step_costs = torch.tensor([[0.1, 0.9], [0.6, 0.2], [0.3, 0.4]])
    assert float(foreseen_cost(step_costs)) == pytest.approx(0.75)


def test_imagined_costs_start_with_the_given_action(pretrained):
    policy = _policy(pretrained, stop=0.5)
    policy.reset()
    policy.agent.observe({"state": make_trajectory(0)["state"][0]})
    wm, ac, latent = policy.agent.world_model, policy.agent.actor_critic, policy.agent.latent
    with torch.no_grad():  # a cost head that reads the state, so actions show
        wm.cost_head.mlp.out.weight.normal_(0, 1)

    def costs(action: float) -> torch.Tensor:
        torch.manual_seed(0)
        return imagined_step_costs(wm, ac, latent, torch.full((1, 6), action), 4, 3)

    a = costs(0.5)
    assert a.shape == (4, 3)
    torch.testing.assert_close(costs(0.5), a)  # the same draws give the same costs
    assert not torch.allclose(costs(-0.5)[0], a[0])  # the first step follows the action


def test_foresight_stop_holds_still_from_the_first_foreseen_cost_until_reset(pretrained):
    policy = _policy(pretrained, stop=0.5)
    high = _constant_cost_head(policy, bin_index=131)  # symexp(0.63) = 0.88
    assert high >= 0.5
    obs = {"state": make_trajectory(0)["state"][0]}
    policy.reset()
    first = policy.step(obs, deterministic=True)
    assert first.stopped and first.foreseen_cost == pytest.approx(high, rel=1e-4)
    assert np.all(first.action == 0)
    # The world model is told what was sent: the zero action.
    assert torch.count_nonzero(policy.agent._prev_action) == 0
    _constant_cost_head(policy, bin_index=127)  # predicts 0: the stop still holds
    later = policy.step(obs, deterministic=True)
    assert later.stopped and np.all(later.action == 0) and np.isnan(later.foreseen_cost)

    policy.reset()
    free = policy.step(obs, deterministic=True)
    assert not free.stopped and free.foreseen_cost == pytest.approx(0.0, abs=1e-6)
    off = _policy(pretrained, stop=0.0)
    off.reset()
    np.testing.assert_allclose(free.action, off.step(obs, deterministic=True).action)
    assert np.isnan(off.step(obs).foreseen_cost)


def test_foresight_stop_overrides_policy_expansion_too(pretrained):
    policy = _policy(pretrained, stop=0.5, pex=True)
    _constant_cost_head(policy, bin_index=131)
    policy.reset()
    step = policy.step({"state": make_trajectory(0)["state"][0]})
    assert step.stopped and np.all(step.action == 0)
    assert step.chosen in ("offline", "online")  # the choice is still reported


def test_veto_drops_the_candidates_foreseen_to_collide():
    p = torch.tensor([0.7, 0.3])
    # Offline foreseen at 0.8 >= 0.5: the draw goes to the online proposal alone.
    torch.testing.assert_close(veto(p, torch.tensor([0.8, 0.1]), 0.5), torch.tensor([0.0, 1.0]))
    # Neither or both foreseen to collide: eq. 21 unchanged (both: the stop then holds).
    torch.testing.assert_close(veto(p, torch.tensor([0.2, 0.1]), 0.5), p)
    torch.testing.assert_close(veto(p, torch.tensor([0.5, 0.9]), 0.5), p)
    # Three candidates, the middle one dropped: 0.5 and 0.2 renormalised to 5/7 and 2/7.
    torch.testing.assert_close(veto(torch.tensor([0.5, 0.3, 0.2]), torch.tensor([0.0, 1.0, 0.4]),
                                    0.5), torch.tensor([5 / 7, 0.0, 2 / 7]))
    # The softmax underflowed to 0 on the only safe candidate: it still gets the draw.
    torch.testing.assert_close(veto(torch.tensor([1.0, 0.0]), torch.tensor([0.9, 0.1]), 0.5),
                               torch.tensor([0.0, 1.0]))


def _state_reading_cost_head(policy: PexPolicy) -> None:
    """Small random output weights: predicted costs of order 0.1 that differ between states."""
    with torch.no_grad():
        out = policy.agent.world_model.cost_head.mlp.out
        out.weight.normal_(0, 0.05, generator=torch.Generator().manual_seed(1))


def test_veto_foresees_each_proposal_along_its_own_policy(pretrained):
    # A fresh new actor (the tiny config's default) proposes other moves than the offline one.
    policy = _policy(pretrained, stop=100.0, pex=True, veto=True)
    _state_reading_cost_head(policy)
    obs = {"state": make_trajectory(0)["state"][0]}
    policy.reset()
    torch.manual_seed(0)
    step = policy.step(obs, deterministic=True)
    assert not step.stopped and not np.isnan(step.foreseen_costs).any()
    assert step.foreseen_cost == step.foreseen_costs[("offline", "online").index(step.chosen)]

    # Recomputed by hand from the same draws: the offline proposal is continued by the
    # offline actor, not taken over by the new one.
    wm, ac, latent = policy.agent.world_model, policy.agent.actor_critic, policy.agent.latent
    actor_input = policy.agent.actor_input(latent.features())
    offline = policy.offline_actor(actor_input).mode
    online = ac.actor(actor_input).mode

    def by_hand(action, actor=None):
        torch.manual_seed(0)
        return float(foreseen_cost(imagined_step_costs(wm, ac, latent, action, 10, 8, actor)))

    torch.manual_seed(0)
    each = policy._foresee_candidates(torch.cat([offline, online]))
    assert each[0] == pytest.approx(by_hand(offline, policy.offline_actor), rel=1e-5)
    assert each[0] != pytest.approx(by_hand(offline), rel=1e-3)
    torch.manual_seed(0)
    imagined_step_costs(wm, ac, latent, offline, 10, 8)  # the draws the offline one used
    second = float(foreseen_cost(imagined_step_costs(wm, ac, latent, online, 10, 8)))
    assert each[1] == pytest.approx(second, rel=1e-5)


def test_veto_hands_the_step_to_the_proposal_foreseen_safe(pretrained):
    policy = _policy(pretrained, stop=100.0, pex=True, veto=True)
    _state_reading_cost_head(policy)
    obs = {"state": make_trajectory(0)["state"][0]}

    def step():
        policy.reset()
        torch.manual_seed(0)
        return policy.step(obs, deterministic=True)

    free = step()
    costs = free.foreseen_costs
    assert abs(costs[0] - costs[1]) > 1e-3
    risky, safe = int(np.argmax(costs)), int(np.argmin(costs))
    policy.config.fosp.foresight_stop = float(costs.mean())  # between the two
    vetoed = step()
    np.testing.assert_allclose(vetoed.foreseen_costs, costs, rtol=1e-5)
    assert vetoed.chosen == ("offline", "online")[safe] and not vetoed.stopped
    assert vetoed.vetoed == ("offline", "online")[risky] and free.vetoed == ""
    assert vetoed.probabilities[risky] == 0.0 and vetoed.probabilities[safe] == 1.0
    np.testing.assert_allclose(vetoed.q_tilde, free.q_tilde)  # eq. 22 itself is untouched
    assert np.any(vetoed.action != 0)

    policy.config.fosp.foresight_stop = float(costs.min()) / 2  # both foreseen to collide
    both = step()
    assert both.stopped and np.all(both.action == 0) and both.vetoed == ""


def test_veto_latch_keeps_a_vetoed_proposal_out_until_reset(pretrained):
    policy = _policy(pretrained, stop=100.0, pex=True, veto=True)
    _state_reading_cost_head(policy)
    obs = {"state": make_trajectory(0)["state"][0]}

    def step(stop: float):
        policy.config.fosp.foresight_stop = stop
        torch.manual_seed(0)
        return policy.step(obs, deterministic=True)

    policy.reset()
    costs = step(100.0).foreseen_costs
    risky, safe = int(np.argmax(costs)), int(np.argmin(costs))
    between, above_both = float(costs.mean()), 100.0
    for latch in (False, True):
        policy.config.fosp.foresight_veto_latch = latch
        policy.reset()
        assert step(between).vetoed == ("offline", "online")[risky]
        later = step(above_both)  # nothing is foreseen to collide any more
        if latch:
            assert later.vetoed == ("offline", "online")[risky]
            assert later.probabilities[risky] == 0.0 and later.chosen == ("offline", "online")[safe]
            assert np.isfinite(later.foreseen_costs).all()  # the real costs are reported
        else:
            assert later.vetoed == "" and later.probabilities[risky] > 0.0
    # Latched out, and the other one now foreseen to collide too: the stop holds.
    both = step(float(costs.min()) / 2)
    assert both.stopped and np.all(both.action == 0)
    policy.reset()
    assert step(above_both).vetoed == ""


def test_hold_on_success_holds_still_from_the_first_touch_until_reset(pretrained):
    run, data = pretrained
    fosp = {"hold_on_success": True, "foresight_stop": 1000.0}
    learner = Learner.from_run(run, data, pex=True, overrides={"fosp": fosp})
    policy = PexPolicy(learner.agent.config, learner.snapshot(), seed=0)
    plain = _policy(pretrained, stop=0.0, pex=True)
    obs = {"state": make_trajectory(0)["state"][0]}
    for p in (policy, plain):
        p.reset()
    moving = policy.step(obs, deterministic=True)
    assert not moving.done and np.any(moving.action != 0) and moving.foreseen_cost >= 0
    touched = policy.step(obs, deterministic=True, touching_target=True)
    assert touched.done and np.all(touched.action == 0)
    assert torch.count_nonzero(policy.agent._prev_action) == 0  # the model is told
    after = policy.step(obs, deterministic=True)  # slid off the target: still holding
    # ... and imagines nothing more (the foresight stop is moot).
    assert after.done and np.all(after.action == 0) and np.isnan(after.foreseen_cost)
    policy.reset()
    assert not policy.step(obs, deterministic=True).done
    # Without the option the label changes nothing.
    plain.step(obs, deterministic=True)
    off = plain.step(obs, deterministic=True, touching_target=True)
    assert not off.done and np.any(off.action != 0)


def test_episode_log_records_where_the_stop_and_the_hold_began():
    from fosp_core.learning.finetune import EpisodeLog, PolicyStep

    def step(chosen, stopped=False, done=False, vetoed="", p_online=0.5):
        return PolicyStep(np.zeros(6, np.float32), chosen, np.full(2, np.nan),
                          np.array([1 - p_online, p_online]), stopped=stopped, vetoed=vetoed,
                          done=done)

    log = EpisodeLog()
    for decision in [step("offline", vetoed="online", p_online=0.0), step("online", done=True),
                     step("online", done=True, stopped=True, p_online=0.9),
                     step("offline", stopped=True, done=True, p_online=0.4)]:
        log.add(decision)
    # choice_margin: mean |P(online) - P(offline)| = (1 + 0 + 0.8 + 0.2) / 4 = 0.5
    meta = log.meta()
    assert meta.pop("choice_margin") == pytest.approx(0.5)
    assert meta == {"chosen": {"offline": 2, "online": 2}, "policy": [0, 1, 1, 0],
                    "stopped_at": 2, "vetoed": {"offline": 0, "online": 1}, "held_at": 1}


def test_rollout_and_rates_report_the_stop(pretrained):
    from fosp_core.envs.safereach import SafeReachEnv
    from fosp_core.learning.finetune_run import episode_rates, format_report, rollout

    policy = _policy(pretrained, stop=0.5)
    _constant_cost_head(policy, bin_index=131)
    env = SafeReachEnv(task="safereach-target-shape", obs_mode="state")
    try:
        arrays, meta, chosen = rollout(env, policy, 0, True, False)
        free, free_meta, free_chosen = rollout(env, _policy(pretrained, stop=0.0), 0, True,
                                               False)
    finally:
        env.close()
    assert meta["stopped_at"] == 0 and free_meta["stopped_at"] is None
    assert meta["held_at"] is None  # fosp.hold_on_success is off
    assert not arrays["action"].any() and free["action"].any()
    rates = episode_rates([(arrays, chosen), (free, free_chosen)], [True, False])
    assert rates["stopped_rate"] == 0.5
    report = {"algo": "fosp", "pex": False, "task": "t", "obs_mode": "state",
              "trajectories": 1, "grad_steps": 1, "seed": 0, "foresight_stop": 0.5,
              "during": dict(rates, cost_regret=0.0)}
    report["before"] = report["after"] = rates
    assert "foresight stop (foreseen cost >= 0.5): before 50%, during 50%, after 50%" in \
        format_report(report)
    assert "veto" not in format_report(report)
    report.update(pex=True, foresight_veto=True)
    report["during"] = dict(report["during"], vetoed_share={"offline": 0.125, "online": 0.0})
    assert "foresight veto while fine-tuning: dropped the offline proposal at 12% of steps, " \
        "the online one at 0%" in format_report(report)
    report["foresight_veto_latch"] = True
    assert "foresight veto (latched until the episode ends) while fine-tuning" in \
        format_report(report)


@pytest.mark.parametrize("fosp", [{"foresight_stop": -0.1}, {"foresight_stop": float("nan")},
                                  {"foresight_horizon": 0}, {"foresight_samples": 0},
                                  {"foresight_veto": True},
                                  {"foresight_stop": 0.5, "foresight_veto_latch": True}])
def test_foresight_config_is_checked(fosp):
    with pytest.raises(ValueError, match="foresight"):
        tiny_config(fosp=fosp)


def test_env_copy_continues_from_the_other_env():
    from fosp_core.envs.safereach import SafeReachEnv

    env, twin = (SafeReachEnv(task="safereach-more-obstacles", obs_mode="state")
                 for _ in range(2))
    try:
        env.reset(seed=3)
        twin.reset(seed=3)
        for _ in range(5):
            env.step(np.array([1.0, 0.3, -0.2, 0, 0, 0], np.float32))
        twin.copy_state_from(env)
        move = np.array([0.2, -1.0, 0.0, 0, 0, 0], np.float32)
        for _ in range(3):
            a, b = env.step(move), twin.step(move)
            np.testing.assert_allclose(a[0]["state"], b[0]["state"], atol=1e-6)
            assert a[4]["step"] == b[4]["step"] == env._t
        twin.reset(seed=4)
        with pytest.raises(ValueError, match="same layout"):
            twin.copy_state_from(env)
    finally:
        env.close()
        twin.close()


def test_foresight_benchmark_runs(pretrained, tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    from fosp_core.learning.finetune_run import finetune

    run, data = pretrained
    finetune(run, "safereach-target-shape", 1, 1, tmp_path / "ft", data=data, pex=False,
             eval_episodes=1, progress=False, deterministic=True)
    out = subprocess.run([sys.executable, "benchmarks/foresight.py", "--finetuned",
                          str(tmp_path / "ft"), "--episodes", "1", "--horizon", "2",
                          "--samples", "2", "--thresholds=-1,0.5", "--alternatives"],
                         cwd=Path(__file__).resolve().parents[1], capture_output=True,
                         text=True, timeout=600)
    assert out.returncode == 0, out.stderr
    assert "threshold 0.5: stops" in out.stdout
    # Threshold -1 alarms at every one of the episode's 80 steps: 27 moves each.
    assert "detours: 2160 constant moves from 80 alarmed steps" in out.stdout


def _push_straight_ahead(policy: PexPolicy) -> None:
    """Both actors' most likely action becomes +x at full step, whatever they observe."""
    for actor in (policy.agent.actor_critic.actor, policy.offline_actor):
        out = actor.mlp.out
        with torch.no_grad():
            out.weight.zero_()
            out.bias.zero_()
            out.bias[0] = 5.0  # tanh(5) = 0.9999


@pytest.mark.parametrize("hold", [True, False])
def test_a_real_touch_in_the_twin_starts_the_hold(pretrained, hold):
    """MuJoCo, not a label handed in: the arm drives into the middle target (nothing between)."""
    from fosp_core.envs.safereach import SafeReachEnv
    from fosp_core.envs.tasks import OBSTACLE_POINTS, TARGET_POINTS, Layout
    from fosp_core.learning.finetune_run import rollout

    run, data = pretrained
    learner = Learner.from_run(run, data, pex=True,
                               overrides={"fosp": {"hold_on_success": hold}})
    policy = PexPolicy(learner.agent.config, learner.snapshot(), seed=0)
    _push_straight_ahead(policy)
    env = SafeReachEnv(task="safereach", obs_mode="state")
    clear = Layout(1, [0, 2], TARGET_POINTS[1], [OBSTACLE_POINTS[0], OBSTACLE_POINTS[2]])
    try:
        arrays, meta, _ = rollout(env, policy, 0, True, False, layout=clear)
    finally:
        env.close()
    touched = np.flatnonzero(arrays["reward"])
    assert touched.size and not arrays["cost"].any()
    first = int(touched[0])  # row t holds the reward of the action in row t
    assert np.all(arrays["action"][1:first + 1, 0] > 0.99)  # pushed all the way in
    if hold:
        # The policy saw the touch in row `first` and sent zeros from the next action on.
        assert meta["held_at"] == first
        assert not arrays["action"][first + 1:].any()
        drift = np.abs(arrays["pose"][first + 1:, :3] - arrays["pose"][first, :3]).max()
        assert drift < 0.01  # the arm stays where it touched
    else:
        assert meta["held_at"] is None
        assert np.all(arrays["action"][first + 1:, 0] > 0.99)  # keeps pushing

"""The foresight stop: the world model's imagined cost of the policy's own path halts the arm."""

import numpy as np
import pytest
import torch

from fosp_core.agent.foresight import foreseen_cost, imagined_step_costs
from fosp_core.agent.networks import TwoHotDist
from fosp_core.finetune import Learner, PexPolicy
from tests.agent_helpers import make_trajectory, tiny_config

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _policy(pretrained, stop: float, pex: bool = False) -> PexPolicy:
    run, data = pretrained
    learner = Learner.from_run(run, data, pex=pex, overrides={"fosp": {"foresight_stop": stop}})
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


def test_rollout_and_rates_report_the_stop(pretrained):
    from fosp_core.envs.safereach import SafeReachEnv
    from fosp_core.finetune_run import episode_rates, format_report, rollout

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
    assert not arrays["action"].any() and free["action"].any()
    rates = episode_rates([(arrays, chosen), (free, free_chosen)], [True, False])
    assert rates["stopped_rate"] == 0.5
    report = {"algo": "fosp", "pex": False, "task": "t", "obs_mode": "state",
              "trajectories": 1, "grad_steps": 1, "seed": 0, "foresight_stop": 0.5,
              "during": dict(rates, cost_regret=0.0)}
    report["before"] = report["after"] = rates
    assert "foresight stop (foreseen cost >= 0.5): before 50%, during 50%, after 50%" in \
        format_report(report)


@pytest.mark.parametrize("fosp", [{"foresight_stop": -0.1}, {"foresight_stop": float("nan")},
                                  {"foresight_horizon": 0}, {"foresight_samples": 0}])
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

    from fosp_core.finetune_run import finetune

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

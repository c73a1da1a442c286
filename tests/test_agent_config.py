"""AgentConfig presets and their YAML form."""

from __future__ import annotations

import pytest

from fosp_core.agent.config import AgentConfig, config_by_name, cpu, paper
from fosp_core.util.config import ConfigError, from_dict, load_yaml, save_yaml


@pytest.mark.parametrize("preset", [paper, cpu])
def test_presets_round_trip_through_yaml(preset, tmp_path) -> None:
    path = tmp_path / "agent.yaml"
    save_yaml(preset(), path)
    assert load_yaml(AgentConfig, path) == preset()
    assert config_by_name(path) == preset()


def test_unknown_key_is_named() -> None:
    with pytest.raises(ConfigError, match=r"'actor_critic\.horizn'"):
        from_dict(AgentConfig, {"actor_critic": {"horizn": 10}})


def test_paper_preset_matches_table_4() -> None:
    c = paper()
    assert (c.model.stoch, c.model.classes, c.batch_size, c.batch_length) == (48, 48, 64, 16)
    assert (c.model.lr, c.model.kl_rep, c.actor_critic.horizon) == (1e-4, 0.1, 15)
    assert (c.fosp.penalty_growth, c.fosp.penalty_init, c.fosp.lagrange_init) == (5e-9, 1e-6, 0.01)
    ac = c.actor_critic
    assert (ac.discount, ac.lambda_reward, ac.lambda_cost, ac.expectile) == (0.997, 0.95, 0.95, 0.8)
    assert (ac.awr_beta_reward, ac.awr_beta_cost, ac.ref_discount) == (10.0, 10.0, 0.99)
    assert (c.fosp.pex_temperature, ac.entropy, ac.actor_lr) == (10.0, 3e-4, 3e-5)
    assert (c.model.mlp_layers, c.model.hidden, c.action_repeat) == (5, 512, 4)
    # App. B: the REF learns faster than the critics and the actor.
    assert ac.ref_lr > ac.critic_lr and ac.ref_lr > ac.actor_lr
    assert cpu().actor_critic.ref_lr > cpu().actor_critic.critic_lr


def test_config_by_name() -> None:
    assert config_by_name("paper") == paper()
    assert config_by_name("cpu") == cpu()
    with pytest.raises(ValueError, match="no agent config"):
        config_by_name("nonexistent")


def test_a_partial_yaml_merges_onto_the_cli_default_or_the_preset_it_names(tmp_path) -> None:
    path = tmp_path / "ablation.yaml"
    path.write_text("algo: fosp-no-ref\nobs_mode: state\nmodel:\n  deter: 64\n")
    config = config_by_name(path)  # the command line's default preset: cpu
    assert (config.algo, config.obs_mode, config.model.deter) == ("fosp-no-ref", "state", 64)
    assert (config.preset, config.model.stoch, config.batch_size) == ("cpu", 16, 16)
    assert config_by_name(path, default_preset="paper").model.stoch == paper().model.stoch
    path.write_text("preset: paper\nmodel:\n  deter: 64\n")
    config = config_by_name(path)
    assert (config.preset, config.model.stoch, config.model.deter) == ("paper", 48, 64)
    path.write_text("preset: huge\n")
    with pytest.raises(ValueError, match="ablation.yaml: preset 'huge' is not one of paper, cpu"):
        config_by_name(path)


def test_invalid_algo_and_obs_mode_are_rejected() -> None:
    with pytest.raises(ValueError, match="algo"):
        AgentConfig(algo="ppo")
    with pytest.raises(ConfigError, match="obs_mode"):
        from_dict(AgentConfig, {"obs_mode": "lidar"})
    with pytest.raises(ConfigError, match="actor_dist"):
        from_dict(AgentConfig, {"actor_critic": {"actor_dist": "beta"}})


@pytest.mark.parametrize("section, key", [
    ("fosp", "online_actor_init"), ("fosp", "online_actor_loss"),
    ("actor_critic", "actor_input"), ("actor_critic", "latent_input"),
])
def test_every_choice_names_the_key_and_the_choices(section: str, key: str) -> None:
    with pytest.raises(ConfigError, match=rf"{section}\.{key} must be one of \(.*got 'bogus'"):
        from_dict(AgentConfig, {section: {key: "bogus"}})

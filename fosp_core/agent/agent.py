"""The FOSP agent: world model + actor-critic, one training step, and acting in an env.

``Agent.train_step(batch)`` is one pass of Algorithm 1 lines 3-11: the world model is updated
by eq. 1 on the batch, then the actor-critic is updated from the batch's posterior states
(imagination, critics, actor, REF, multipliers; see ``actor_critic``).

Acting keeps the recurrent latent across calls: ``reset()`` at an episode start, then
``act(obs)`` per step folds the observation into the state with ``WorldModel.observe_step``
(whose encoder goes through the same ``preprocess_image`` as training) and reads the actor.

Both paths first pass the vector observation ('state', or 'pose' beside the image) through
``VectorNormalizer``, fitted on the dataset by ``fit_normalizer`` before training and stored
in the state dict, so training and deployment scale observations identically.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from fosp_core.agent.actor_critic import ActorCritic
from fosp_core.agent.augment import augment_images
from fosp_core.agent.config import AgentConfig
from fosp_core.agent.precision import Precision
from fosp_core.agent.replay import OBS_KEYS
from fosp_core.agent.world_model import Latent, WorldModel


class VectorNormalizer(nn.Module):
    """Per-dimension standardisation of the low-dimensional observation ('state' or 'pose').

    The SafeReach state holds positions in metres that vary by a few centimetres (the target's
    y is +-0.075). Symlog leaves such values unchanged, so their share of the reconstruction
    loss is ~1e-3 and a world model trained on raw values learns to ignore where the target is
    (its posterior cannot tell left from right; docs/implementation.md). Dataset mean / std,
    fitted once before training, fix the scale; they are buffers, so checkpoints carry them
    and acting applies the same transform.
    """

    def __init__(self, key: str, dim: int, min_std: float = 0.01) -> None:
        super().__init__()
        self.key, self.min_std = key, min_std
        self.register_buffer("mean", torch.zeros(dim))
        self.register_buffer("std", torch.ones(dim))

    def fit(self, rows: np.ndarray) -> None:
        """Set mean / std from (N, dim) rows; dims varying less than ``min_std`` pass unscaled.

        Leaving a (nearly) constant dim as it is, rather than dividing by a floor, keeps an
        input the data never varied in scale when deployment does vary it: the third obstacle
        slot of ``safereach-more-obstacles`` is all zeros in a two-obstacle dataset, and a
        floor of 0.01 turned its 0.5 m into 50 standard deviations.
        """
        rows = torch.as_tensor(np.asarray(rows, dtype=np.float64))
        mean, std = rows.mean(0), rows.std(0)
        constant = std < self.min_std
        self.mean.copy_(torch.where(constant, 0.0, mean).float())
        self.std.copy_(torch.where(constant, 1.0, std).float())

    def forward(self, obs: dict[str, Tensor]) -> dict[str, Tensor]:
        if self.key not in obs:
            return obs
        return {**obs, self.key: (obs[self.key].float() - self.mean) / self.std}

    def inverse(self, standardised: Tensor) -> Tensor:
        """Standardised values -> the observation's own units."""
        return standardised * self.std + self.mean


class Agent(nn.Module):
    """World model, actor-critic and their optimisers, for one ``AgentConfig``."""

    def __init__(self, config: AgentConfig, device: str | torch.device = "cpu") -> None:
        super().__init__()
        self.config = config
        self.device = torch.device(device)
        if config.obs_mode == "state":
            self.normalizer = VectorNormalizer("state", config.state_dim)
        else:
            self.normalizer = VectorNormalizer("pose", config.pose_dim)
        self.world_model = WorldModel(config)
        self.actor_critic = ActorCritic(config, self.world_model.feat_dim,
                                        unnormalize=self.normalizer.inverse)
        m = config.model
        self.model_opt = torch.optim.Adam(self.world_model.parameters(), lr=m.lr, eps=m.eps)
        self.precision = Precision(self.device, config.train.precision)
        self.actor_critic.precision = self.precision
        self.to(self.device)
        if config.train.channels_last:
            self.world_model.to(memory_format=torch.channels_last)  # its conv weights
        self._latent: Latent | None = None
        self._prev_action: Tensor | None = None
        self._obs: dict[str, Tensor] = {}  # the last observation ``observe`` folded in

    # ---------------------------------------------------------------------------------------
    # Training.

    def train_step(self, batch: dict[str, Tensor]) -> dict[str, float]:
        """World-model update (eq. 1), then actor-critic update; returns float metrics."""
        batch = self.normalizer(self.precision.to_device(batch))
        m = self.config.model
        if "image" in batch and (m.aug_shift or m.aug_light):
            batch["image"] = augment_images(batch["image"], m.aug_shift, m.aug_light)
        if self.config.algo == "dreamer":
            # DreamerV3 has no cost: its world model sees an all-zero cost signal.
            batch["cost"] = torch.zeros_like(batch["cost"])
        self.world_model.train()
        with self.precision.autocast():
            loss, wm_metrics, posterior = self.world_model.loss(batch)
        sync = self.actor_critic.grad_sync  # data-parallel: average over ranks
        grad_norm = self.precision.step(
            self.model_opt, loss, self.world_model.parameters(), self.config.model.grad_clip,
            None if sync is None else (lambda: sync(self.world_model)))
        with self.precision.autocast():
            ac_metrics = self.actor_critic.update(self.world_model, posterior, batch)
        metrics = {f"model/{k}": v for k, v in wm_metrics.items()}
        metrics["model/grad_norm"] = grad_norm.item()
        metrics.update({f"ac/{k}": v for k, v in ac_metrics.items()})
        return metrics

    def fit_normalizer(self, trajectories: list[Any]) -> None:
        """Fit the observation normaliser on every row of the dataset (before training)."""
        key = self.normalizer.key
        rows = np.concatenate([getattr(t, "arrays", t)[key] for t in trajectories])
        self.normalizer.fit(rows)

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return {"model": self.model_opt, **self.actor_critic.optimizers()}

    def state_dict(self, *args: Any, **kwargs: Any) -> dict[str, Any]:  # type: ignore[override]
        """Weights, buffers (multipliers, return ranges) and every optimiser's state."""
        return {
            "modules": super().state_dict(),
            "optimizers": {name: opt.state_dict() for name, opt in self.optimizers().items()},
        }

    def load_state_dict(self, state: dict[str, Any], strict: bool = True) -> Any:  # type: ignore[override]
        result = super().load_state_dict(state["modules"], strict=strict)
        # Exported weights (train.export_run) carry no optimiser state: optimisers start fresh.
        for name, opt in self.optimizers().items():
            if name in state["optimizers"]:
                configured = [{k: v for k, v in group.items() if k != "params"}
                              for group in opt.param_groups]
                opt.load_state_dict(state["optimizers"][name])
                # The saved state brings Adam's moments; the config keeps its say on the
                # hyperparameters, so `--set actor_critic.actor_lr=...` on a loaded run takes
                # effect (load_state_dict alone would restore the learning rate it was saved with).
                for group, hyper in zip(opt.param_groups, configured):
                    group.update(hyper)
        return result

    # ---------------------------------------------------------------------------------------
    # Acting.

    def reset(self) -> None:
        """Forget the latent state: the next ``act`` starts a new episode."""
        self._latent = None
        self._prev_action = None
        self._obs = {}

    @torch.no_grad()
    def act(self, obs: dict[str, np.ndarray], deterministic: bool = True) -> np.ndarray:
        """One env observation (unbatched) -> action (action_dim,) float32 in [-1, 1].

        ``deterministic`` takes the mode of the latent and of the actor (evaluation);
        otherwise both are sampled (exploration).
        """
        features = self.observe(obs, deterministic)
        action = self.actor_critic.policy(self.actor_input(features), deterministic)
        self.remember_action(action)
        return action[0].cpu().numpy().astype(np.float32)

    @property
    def latent(self) -> Latent | None:
        """The model state of the last ``observe`` (None before an episode's first)."""
        return self._latent

    def actor_input(self, features: Tensor) -> Tensor:
        """What the actor reads at the step ``observe`` just took (``actor_input``)."""
        return self.actor_critic.actor_input(features, self._obs.get("state"))

    def remember_action(self, action: Tensor) -> None:
        """The action actually sent, which the next ``observe`` feeds to the world model."""
        self._prev_action = action.reshape(1, self.config.action_dim).to(self.device)

    @torch.no_grad()
    def observe(self, obs: dict[str, np.ndarray], deterministic: bool = True) -> Tensor:
        """Fold one observation into the recurrent latent; returns its features (1, F).

        The caller then picks an action from ``actor_input(features)`` and passes it to
        ``remember_action`` (``act`` does both; policy expansion chooses between two actors).
        """
        if self.training or self.world_model.training:  # a flag, not a walk of the modules
            self.eval()
        keys = OBS_KEYS[self.config.obs_mode]
        tensors = {key: torch.as_tensor(np.asarray(obs[key]))[None].to(self.device) for key in keys}
        tensors = self.normalizer(tensors)
        self._obs = tensors
        first = self._latent is None
        if first:
            self._latent = self.world_model.rssm.initial(1, self.device)
            self._prev_action = torch.zeros(1, self.config.action_dim, device=self.device)
        is_first = torch.tensor([first], device=self.device)
        # deterministic: the most likely latent instead of a sample; evaluation becomes
        # reproducible, and a one-hot mode is as much in the training distribution as any.
        self._latent = self.world_model.observe_step(self._latent, self._prev_action, tensors,
                                                     is_first, deterministic)
        return self.actor_critic.inputs(self._latent)

"""The world model of sec. 3 (eq. 1): an RSSM with observation, reward, cost and continue heads.

Model state s_t = {h_t, z_t}:
    deterministic state  h_t = f(z_{t-1}, h_{t-1}, a_{t-1})      (a GRU)
    prior                z_t ~ p(z_t | h_t)                        (used in imagination)
    posterior            z_t ~ q(z_t | h_t, x_t)                   (used on real data)
z_t is ``stoch`` one-hot categoricals of ``classes`` classes each, sampled with
straight-through gradients and mixed with 1% uniform (DreamerV3's unimix).

Batches are dicts of tensors shaped (B, T, ...):
    image (B, T, 64, 64, 3) uint8 and pose (B, T, 6) in 'image' mode, or state (B, T, k);
    action (B, T, 6): row t holds the action that LED to observation t (zeros at t = 0);
    reward, cost (B, T): received together with observation t;
    is_first (B, T) bool: observation t starts an episode (the state resets there);
    is_terminal (B, T) bool, optional: the episode ended at t (SafeReach never terminates
    early, so it defaults to all False).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from fosp_core.agent.config import AgentConfig
from fosp_core.agent.math import symlog
from fosp_core.agent.networks import (
    MLP,
    BernoulliHead,
    ImageDecoder,
    ImageEncoder,
    TwoHotHead,
    categorical_kl,
    preprocess_image,
)


def most_likely(logits: Tensor) -> Tensor:
    """One-hot of each categorical's most likely class, in the logits' dtype."""
    return F.one_hot(logits.argmax(-1), logits.shape[-1]).to(logits.dtype)


@dataclass
class Latent:
    """A batch of model states s = {h, z} with any leading shape."""

    deter: Tensor  # (..., deter)     h
    stoch: Tensor  # (..., stoch, classes) one-hot sample z (straight-through)
    logits: Tensor  # (..., stoch, classes) log-probs of the distribution z came from

    def features(self) -> Tensor:
        """s_t as one vector: [h_t, flatten(z_t)], the input of the world model's heads."""
        return torch.cat([self.deter, self.stoch.flatten(-2)], -1)

    def mode(self) -> Latent:
        """The same state with the sample z_t replaced by its most likely classes (one-hot)."""
        return Latent(self.deter, most_likely(self.logits).to(self.stoch.dtype), self.logits)

    def mode_features(self) -> Tensor:
        """[h_t, flatten(mode of z_t)]: ``features`` of ``mode``."""
        return self.mode().features()

    def map(self, fn: Callable[[Tensor], Tensor]) -> Latent:
        """Apply a tensor op (index, reshape, detach, ...) to every field."""
        return Latent(fn(self.deter), fn(self.stoch), fn(self.logits))

    def detach(self) -> Latent:
        return self.map(Tensor.detach)

    @staticmethod
    def stack(states: list[Latent], dim: int) -> Latent:
        return Latent(
            torch.stack([s.deter for s in states], dim),
            torch.stack([s.stoch for s in states], dim),
            torch.stack([s.logits for s in states], dim),
        )


class NormGRUCell(nn.Module):
    """GRU cell with LayerNorm on its gates, as DreamerV3.

    The update gate is biased by -1 so a fresh model keeps most of h_t (longer memory early).
    """

    def __init__(self, in_dim: int, size: int) -> None:
        super().__init__()
        self.linear = nn.Linear(in_dim + size, 3 * size, bias=False)
        self.norm = nn.LayerNorm(3 * size)

    def forward(self, x: Tensor, h: Tensor) -> Tensor:
        # The gates and the state in float32 whatever the precision of the matmul.
        gates = self.norm(self.linear(torch.cat([x, h], -1)).float())
        reset, candidate, update = gates.chunk(3, -1)
        reset = torch.sigmoid(reset)
        candidate = torch.tanh(reset * candidate)
        update = torch.sigmoid(update - 1.0)
        return update * candidate + (1 - update) * h


class RSSM(nn.Module):
    """Recurrent state-space model: the latent encoder, dynamics and prior of eq. 1."""

    def __init__(
        self,
        embed_dim: int,
        action_dim: int,
        deter: int,
        stoch: int,
        classes: int,
        hidden: int,
        unimix: float,
    ) -> None:
        super().__init__()
        self.deter_size, self.stoch_size, self.classes, self.unimix = deter, stoch, classes, unimix
        self.action_dim = action_dim
        self.step_in = MLP(stoch * classes + action_dim, None, hidden, 1)
        self.gru = NormGRUCell(hidden, deter)
        self.prior_net = MLP(deter, stoch * classes, hidden, 1)
        self.posterior_net = MLP(deter + embed_dim, stoch * classes, hidden, 1)

    def initial(self, batch_size: int, device: torch.device | None = None) -> Latent:
        """The state before the first observation: all zeros (episode starts reset to it)."""
        deter = torch.zeros(batch_size, self.deter_size, device=device)
        stoch = torch.zeros(batch_size, self.stoch_size, self.classes, device=device)
        return Latent(deter, stoch, torch.zeros_like(stoch))

    def _distribution(self, raw: Tensor) -> Tensor:
        """Raw net output -> log-probs with 1% uniform mixed in (DreamerV3's unimix).

        The floor on every class keeps KL terms finite and prevents deterministic latents.
        """
        probs = raw.unflatten(-1, (self.stoch_size, self.classes)).softmax(-1)
        probs = (1 - self.unimix) * probs + self.unimix / self.classes
        return probs.log()

    @staticmethod
    def _sample(logits: Tensor) -> Tensor:
        """One-hot sample whose gradient is that of the probabilities (straight-through)."""
        probs = logits.exp()
        index = torch.distributions.Categorical(probs=probs).sample()
        one_hot = F.one_hot(index, probs.shape[-1]).to(probs.dtype)
        return one_hot + probs - probs.detach()

    @classmethod
    def _stoch(cls, logits: Tensor, sample: bool) -> Tensor:
        """A sample of z (straight-through), or its most likely classes without drawing."""
        return cls._sample(logits) if sample else most_likely(logits)

    def img_step(self, prev: Latent, action: Tensor, sample: bool = True) -> Latent:
        """Prior step: h_t = f(z_{t-1}, h_{t-1}, a_{t-1}), z_t ~ p(z_t | h_t) (or its mode)."""
        x = self.step_in(torch.cat([prev.stoch.flatten(-2), action], -1))
        deter = self.gru(x, prev.deter)
        logits = self._distribution(self.prior_net(deter))
        return Latent(deter, self._stoch(logits, sample), logits)

    def obs_step(
        self, prev: Latent, action: Tensor, embed: Tensor, is_first: Tensor,
        sample: tuple[bool, bool] = (True, True),
    ) -> tuple[Latent, Latent]:
        """One filtering step on a real observation: (posterior, prior) of s_t.

        Where ``is_first`` the previous state and action are zeroed, i.e. reset to
        ``initial``, so one sequence can hold the end of one episode and the start of the next.
        ``sample``: whether the (posterior, prior) z are drawn or their modes taken.
        """
        keep = (~is_first.bool()).to(embed.dtype)
        prev = Latent(
            prev.deter * keep[:, None],
            prev.stoch * keep[:, None, None],
            prev.logits * keep[:, None, None],
        )
        prior = self.img_step(prev, action * keep[:, None], sample[1])
        logits = self._distribution(self.posterior_net(torch.cat([prior.deter, embed], -1)))
        posterior = Latent(prior.deter, self._stoch(logits, sample[0]), logits)
        return posterior, prior

    def observe(
        self, embed: Tensor, action: Tensor, is_first: Tensor, start: Latent | None = None
    ) -> tuple[Latent, Latent]:
        """Filter a whole sequence: (posterior, prior), both with fields shaped (B, T, ...)."""
        state = start if start is not None else self.initial(embed.shape[0], embed.device)
        posteriors, priors = [], []
        for t in range(embed.shape[1]):
            state, prior = self.obs_step(state, action[:, t], embed[:, t], is_first[:, t])
            posteriors.append(state)
            priors.append(prior)
        return Latent.stack(posteriors, 1), Latent.stack(priors, 1)

    def imagine(
        self, policy: Callable[[Latent], Tensor], start: Latent, horizon: int
    ) -> tuple[Latent, Tensor]:
        """Roll the prior forward under ``policy`` (eq. 6), time-major.

        Args:
            policy: states (fields (N, ...)) -> action (N, A).
            start: states with fields shaped (N, ...); callers usually pass the posteriors of
                a batch flattened and detached, so imagination never trains the model.
        Returns:
            states with fields (H + 1, N, ...), start included at index 0, and the actions
            (H, N, A), action h taken in state h.
        """
        states, actions = [start], []
        for _ in range(horizon):
            action = policy(states[-1])
            states.append(self.img_step(states[-1], action))
            actions.append(action)
        return Latent.stack(states, 0), torch.stack(actions, 0)

    def kl_losses(self, posterior: Latent, prior: Latent) -> tuple[Tensor, Tensor]:
        """The two KL terms of eq. 1, summed over latents: (dynamics, representation).

        dynamics = KL[sg(q) || p] trains the prior towards the posterior;
        representation = KL[q || sg(p)] keeps the posterior predictable.
        """
        dyn = categorical_kl(posterior.logits.detach(), prior.logits).sum(-1)
        rep = categorical_kl(posterior.logits, prior.logits.detach()).sum(-1)
        return dyn, rep


class WorldModel(nn.Module):
    """Encoder, RSSM, decoders and the reward / cost / continue heads, trained by eq. 1."""

    def __init__(self, config: AgentConfig) -> None:
        super().__init__()
        self.config = config
        m = config.model
        self.obs_mode = config.obs_mode
        if self.obs_mode == "image":
            self.image_encoder = ImageEncoder(m.cnn_depth, config.image_size)
            self.pose_encoder = MLP(config.pose_dim, None, m.hidden, m.mlp_layers)
            embed_dim = self.image_encoder.out_dim + self.pose_encoder.out_dim
        else:
            self.state_encoder = MLP(config.state_dim, None, m.hidden, m.mlp_layers)
            embed_dim = self.state_encoder.out_dim

        self.rssm = RSSM(
            embed_dim, config.action_dim, m.deter, m.stoch, m.classes, m.hidden, m.unimix
        )
        feat_dim = m.deter + m.stoch * m.classes
        self.feat_dim = feat_dim

        if self.obs_mode == "image":
            self.image_decoder = ImageDecoder(feat_dim, m.cnn_depth, config.image_size)
            self.pose_decoder = MLP(feat_dim, config.pose_dim, m.hidden, m.mlp_layers)
        else:
            self.state_decoder = MLP(feat_dim, config.state_dim, m.hidden, m.mlp_layers)
        two_hot = {"bins": m.bins, "low": m.bin_low, "high": m.bin_high}
        self.reward_head = TwoHotHead(feat_dim, m.hidden, m.mlp_layers, **two_hot)
        self.cost_head = TwoHotHead(feat_dim, m.hidden, m.mlp_layers, **two_hot)
        self.continue_head = BernoulliHead(feat_dim, m.hidden, m.mlp_layers)

    def encode(self, obs: dict[str, Tensor]) -> Tensor:
        """Observation dict with any leading shape -> embedding (..., embed_dim).

        Vector inputs are symlog-squashed first (DreamerV3), so pose and state need no
        hand-tuned normalisation.
        """
        if self.obs_mode == "image":
            image = self.image_encoder(obs["image"])
            pose = self.pose_encoder(symlog(obs["pose"].float()))
            return torch.cat([image, pose], -1)
        return self.state_encoder(symlog(obs["state"].float()))

    def observe_step(
        self, prev: Latent, action: Tensor, obs: dict[str, Tensor], is_first: Tensor,
        deterministic: bool = False,
    ) -> Latent:
        """Deployment: fold one observation (B, ...) into the state; returns the posterior,
        its z drawn, or with ``deterministic`` its most likely classes. The prior's z is never
        used here, so it is not drawn."""
        posterior, _ = self.rssm.obs_step(prev, action, self.encode(obs), is_first,
                                          sample=(not deterministic, False))
        return posterior

    def imagine(
        self, policy: Callable[[Latent], Tensor], start: Latent, horizon: int
    ) -> tuple[Latent, Tensor]:
        """See ``RSSM.imagine``."""
        return self.rssm.imagine(policy, start, horizon)

    def loss(self, batch: dict[str, Tensor]) -> tuple[Tensor, dict[str, float], Latent]:
        """World-model loss of eq. 1 on a (B, T) batch.

        sum_t  -ln p(x_t|s_t) - ln p(r_t|s_t) - w_t ln p(c_t|s_t) - ln p(cont_t|s_t)
               + dyn * max(free, KL[sg(q) || p]) + rep * max(free, KL[q || sg(p)])
        averaged over batch and time. w_t = cost_weight where c_t >= 1 (rare violations),
        else 1. The image term is the squared error summed over pixels (a unit-variance
        Gaussian up to a constant); pose and state are predicted in symlog space, their
        squared errors scaled by ``vector_weight``.

        Returns the loss, float metrics, and the posterior states (B, T, ...) from which
        imagination starts (still attached to the graph; detach them for imagination).
        """
        m = self.config.model
        action = batch["action"].float()
        is_first = batch["is_first"].bool()
        embed = self.encode(batch)
        posterior, prior = self.rssm.observe(embed, action, is_first)
        features = posterior.features()

        losses: dict[str, Tensor] = {}
        if self.obs_mode == "image":
            target = preprocess_image(batch["image"])
            losses["image"] = (self.image_decoder(features) - target).square().sum((-3, -2, -1))
            pose = symlog(batch["pose"].float())
            pose_error = (self.pose_decoder(features) - pose).square().sum(-1)
            losses["pose"] = m.vector_weight * pose_error
        else:
            state = symlog(batch["state"].float())
            state_error = (self.state_decoder(features) - state).square().sum(-1)
            losses["state"] = m.vector_weight * state_error

        losses["reward"] = -self.reward_head(features).log_prob(batch["reward"])
        cost = batch["cost"].float()
        cost_weight = torch.where(cost >= 1, m.cost_weight, 1.0)
        losses["cost"] = -cost_weight * self.cost_head(features).log_prob(cost)
        terminal = batch.get("is_terminal", torch.zeros_like(is_first)).bool()
        losses["continue"] = -self.continue_head(features).log_prob((~terminal).float())

        dyn, rep = self.rssm.kl_losses(posterior, prior)
        losses["dyn"] = m.kl_dyn * torch.clamp(dyn, min=m.free_bits)
        losses["rep"] = m.kl_rep * torch.clamp(rep, min=m.free_bits)

        total = sum(term.mean() for term in losses.values())
        metrics = {f"{name}_loss": term.mean().item() for name, term in losses.items()}
        metrics["loss"] = total.item()
        metrics["kl_dyn"] = dyn.mean().item()
        metrics["kl_rep"] = rep.mean().item()
        metrics["prior_entropy"] = _entropy(prior.logits).mean().item()
        metrics["posterior_entropy"] = _entropy(posterior.logits).mean().item()
        return total, metrics, posterior


def _entropy(logits: Tensor) -> Tensor:
    """Entropy of the latent categoricals, summed over latents."""
    return -(logits.exp() * logits).sum((-2, -1))

"""Building blocks shared by the world model and the actor-critic.

- ``preprocess_image``: the ONE uint8 -> float conversion; training and deployment both go
  through it (the image encoder calls it), so the two can never disagree.
- ``MLP``: Linear -> LayerNorm -> SiLU blocks, as DreamerV3.
- ``ImageEncoder`` / ``ImageDecoder``: strided convs 64x64x3 <-> 4x4 feature maps.
- ``TwoHotHead``: reward, cost and critic heads; a categorical over symlog-spaced bins.
- ``BernoulliHead``: the continue flag.
- ``ActorHead``: 6-D actions in [-1, 1] as DreamerV3's bounded normal (``BoundedNormal``) or a
  truncated normal (``TruncatedNormal``), optionally behind an ``ObstacleSetEncoder``.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from fosp_core.agent.math import symexp, symlog, symlog_bins, twohot, twohot_mean


def preprocess_image(image: Tensor) -> Tensor:
    """uint8 images (..., H, W, 3) -> float32 in [-0.5, 0.5], layout unchanged."""
    return image.to(torch.float32) / 255.0 - 0.5


class MLP(nn.Module):
    """``layers`` x (Linear -> LayerNorm -> SiLU), then a plain Linear to ``out_dim`` if given.

    With ``out_dim=None`` the output is the last hidden layer (an encoder); with
    ``layers=0`` the module is a single Linear.
    """

    def __init__(self, in_dim: int, out_dim: int | None, hidden: int, layers: int) -> None:
        super().__init__()
        blocks: list[nn.Module] = []
        width = in_dim
        for _ in range(layers):
            # No bias: the LayerNorm right after has its own.
            blocks += [nn.Linear(width, hidden, bias=False), nn.LayerNorm(hidden), nn.SiLU()]
            width = hidden
        self.out: nn.Linear | None = None
        if out_dim is not None:
            self.out = nn.Linear(width, out_dim)
            width = out_dim
        self.body = nn.Sequential(*blocks)
        self.out_dim = width

    def forward(self, x: Tensor) -> Tensor:
        x = self.body(x)
        # An output layer's result leaves in float32 (a no-op without autocast): under bf16
        # (agent.precision) distributions and losses still compute in full precision.
        return self.out(x).float() if self.out is not None else x


def _stages(image_size: int, min_res: int) -> int:
    stages = int(math.log2(image_size // min_res))
    if min_res * 2**stages != image_size:
        raise ValueError(f"image_size {image_size} must be min_res {min_res} times a power of 2")
    return stages


class ImageEncoder(nn.Module):
    """uint8 images (batch..., 64, 64, 3), at least one batch axis -> (batch..., out_dim).

    Each stage halves the resolution (kernel 4, stride 2) and doubles the channels, from
    ``depth`` at 32x32 down to 8 * depth at 4x4 for 64x64 inputs. GroupNorm with one group
    normalises each image's feature map, standing in for DreamerV3's per-layer LayerNorm.
    """

    def __init__(self, depth: int, image_size: int = 64, min_res: int = 4) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        channels = 3
        for stage in range(_stages(image_size, min_res)):
            out = depth * 2**stage
            layers += [nn.Conv2d(channels, out, 4, 2, 1, bias=False), nn.GroupNorm(1, out)]
            layers += [nn.SiLU()]
            channels = out
        self.convs = nn.Sequential(*layers)
        self.out_dim = channels * min_res * min_res

    def forward(self, image: Tensor) -> Tensor:
        lead = image.shape[:-3]
        # NHWC -> NCHW as a view: the memory stays NHWC, which is channels-last, the layout
        # the convolutions run fastest in on the CPU (train.channels_last).
        x = preprocess_image(image).flatten(0, -4).permute(0, 3, 1, 2)
        if self.convs[0].weight.is_contiguous(memory_format=torch.channels_last):
            x = x.contiguous(memory_format=torch.channels_last)
        return self.convs(x).flatten(1).unflatten(0, lead)


class ImageDecoder(nn.Module):
    """Features (..., in_dim) -> mean image (..., 64, 64, 3) in ``preprocess_image`` space.

    The mirror of ``ImageEncoder``: a linear map to a 4x4 map of 8 * depth channels, then
    transposed convs doubling the resolution; the last one outputs the 3 colour channels.
    """

    def __init__(self, in_dim: int, depth: int, image_size: int = 64, min_res: int = 4) -> None:
        super().__init__()
        stages = _stages(image_size, min_res)
        channels = depth * 2 ** (stages - 1)
        self.min_res = min_res
        self.channels = channels
        self.project = nn.Linear(in_dim, channels * min_res * min_res)
        layers: list[nn.Module] = []
        for stage in reversed(range(stages)):
            if stage == 0:
                layers += [nn.ConvTranspose2d(channels, 3, 4, 2, 1)]
            else:
                out = depth * 2 ** (stage - 1)
                layers += [nn.ConvTranspose2d(channels, out, 4, 2, 1, bias=False)]
                layers += [nn.GroupNorm(1, out), nn.SiLU()]
                channels = out
        self.deconvs = nn.Sequential(*layers)

    def forward(self, features: Tensor) -> Tensor:
        lead = features.shape[:-1]
        x = self.project(features.flatten(0, -2))
        x = x.view(-1, self.channels, self.min_res, self.min_res)
        if self.deconvs[0].weight.is_contiguous(memory_format=torch.channels_last):
            x = x.contiguous(memory_format=torch.channels_last)
        x = self.deconvs(x).permute(0, 2, 3, 1)  # NCHW -> NHWC
        return x.unflatten(0, lead).float()


class TwoHotDist:
    """Categorical over symlog-spaced bins, read as a real number (DreamerV3)."""

    def __init__(self, logits: Tensor, bins: Tensor) -> None:
        self.logits = logits
        self.bins = bins

    def mean(self) -> Tensor:
        """Expected value in the original space: symexp(sum_k p_k * bin_k)."""
        return symexp(twohot_mean(self.logits.softmax(-1), self.bins))

    def log_prob(self, target: Tensor) -> Tensor:
        """Cross-entropy against the two-hot encoding of symlog(target), negated."""
        target = twohot(symlog(target.to(self.logits.dtype)), self.bins)
        return (target * self.logits.log_softmax(-1)).sum(-1)


class TwoHotHead(nn.Module):
    """MLP -> ``TwoHotDist`` for reward, cost and value predictions.

    The output layer starts at zero, so every head first predicts exactly 0 (DreamerV3): a
    random initial guess of a return would only add noise to the first updates.
    """

    def __init__(
        self,
        in_dim: int,
        hidden: int,
        layers: int,
        bins: int = 255,
        low: float = -20.0,
        high: float = 20.0,
    ) -> None:
        super().__init__()
        self.mlp = MLP(in_dim, bins, hidden, layers)
        nn.init.zeros_(self.mlp.out.weight)
        nn.init.zeros_(self.mlp.out.bias)
        self.register_buffer("bins", symlog_bins(bins, low, high), persistent=False)

    def forward(self, features: Tensor) -> TwoHotDist:
        return TwoHotDist(self.mlp(features), self.bins)


class BernoulliHead(nn.Module):
    """MLP -> Bernoulli, for the continue flag (1 = the episode goes on)."""

    def __init__(self, in_dim: int, hidden: int, layers: int) -> None:
        super().__init__()
        self.mlp = MLP(in_dim, 1, hidden, layers)

    def forward(self, features: Tensor) -> torch.distributions.Bernoulli:
        return torch.distributions.Bernoulli(logits=self.mlp(features).squeeze(-1))


class BoundedNormal:
    """DreamerV3's bounded normal: a normal whose mean lies in [-1, 1], samples clipped to it.

    Log-prob and entropy are the plain normal's (summed over the action axis), so the
    likelihood gradient in the mean is (a - loc) / scale^2 however wide the distribution is.
    ``TruncatedNormal``'s likelihood divides by the mass inside the box, which it raises by
    moving the mean towards the nearer bound while the std is wide, so a cloned mean
    overshoots the demonstrations' towards +-1 (a bolder move;
    ``test_bounded_normal_clones_the_mean_where_the_truncated_one_overshoots``). Cloning on
    the true state it violates far less than the truncated one; through FOSP's world-model
    features it did not help (docs/implementation.md).
    """

    def __init__(self, loc: Tensor, scale: Tensor, low: float = -1.0, high: float = 1.0) -> None:
        self.loc, self.scale, self.low, self.high = loc, scale, low, high

    @property
    def mode(self) -> Tensor:
        return self.loc.clamp(self.low, self.high)

    def rsample(self) -> Tensor:
        sample = self.loc + self.scale * torch.randn_like(self.loc)
        return sample.clamp(self.low, self.high)

    def sample(self) -> Tensor:
        with torch.no_grad():
            return self.rsample()

    def log_prob(self, action: Tensor) -> Tensor:
        z = (action - self.loc) / self.scale
        return (-0.5 * z.square() - torch.log(self.scale) - 0.5 * math.log(2 * math.pi)).sum(-1)

    def entropy(self) -> Tensor:
        return (0.5 * math.log(2 * math.pi * math.e) + torch.log(self.scale)).sum(-1)


class TruncatedNormal(BoundedNormal):
    """Independent normals truncated to [low, high], one per action dimension.

    It was chosen over a tanh-squashed normal because the actor is trained by weighted
    log-likelihood (eq. 20) of actions that may sit exactly on the bounds (a saturated
    SpaceMouse, the workspace edge): the truncated normal gives them a finite log-prob, and
    its entropy has a closed form; a tanh-normal needs atanh(+-1) = inf and a sampled entropy.
    ``BoundedNormal`` has both properties too and clones the true state better (its
    docstring). ``log_prob`` and ``entropy`` sum over the last (action) axis.
    """

    def __init__(self, loc: Tensor, scale: Tensor, low: float = -1.0, high: float = 1.0) -> None:
        super().__init__(loc, scale, low, high)
        self._alpha = (low - loc) / scale
        self._beta = (high - loc) / scale
        self._cdf_alpha = torch.special.ndtr(self._alpha)
        self._mass = (torch.special.ndtr(self._beta) - self._cdf_alpha).clamp(min=1e-6)

    def rsample(self) -> Tensor:
        """Inverse-CDF sample, differentiable in loc and scale."""
        uniform = torch.rand_like(self.loc)
        # Keep the quantile off 0 and 1, where ndtri (and its gradient) is infinite.
        quantile = (self._cdf_alpha + uniform * self._mass).clamp(1e-6, 1 - 1e-6)
        sample = self.loc + self.scale * torch.special.ndtri(quantile)
        return sample.clamp(self.low, self.high)

    def log_prob(self, action: Tensor) -> Tensor:
        return super().log_prob(action) - torch.log(self._mass).sum(-1)

    def entropy(self) -> Tensor:
        # H = log(sqrt(2 pi e) sigma Z) + (alpha phi(alpha) - beta phi(beta)) / (2 Z)
        def phi(x: Tensor) -> Tensor:
            return torch.exp(-0.5 * x.square()) / math.sqrt(2 * math.pi)

        alpha, beta, mass = self._alpha, self._beta, self._mass
        edge = (alpha * phi(alpha) - beta * phi(beta)) / (2 * mass)
        log_norm = 0.5 * math.log(2 * math.pi * math.e) + torch.log(self.scale * mass)
        return (log_norm + edge).sum(-1)


ACTOR_DIST_CLASSES = {"normal": BoundedNormal, "truncated_normal": TruncatedNormal}


class ObstacleSetEncoder(nn.Module):
    """Inputs (..., ego_dim + slots * (item_dim + 1)) -> (..., ego_dim + hidden): the ego part
    unchanged, then one vector for the whole set of obstacles.

    Each slot holds an item and its present flag. One MLP encodes every present item and a
    max over them pools the set (Deep Sets), so the output does not depend on the slots'
    order or on how many are filled: an actor that learned to avoid two obstacles reads a
    third as one more of the same kind, not as an input it has never seen vary. With no
    obstacle present the pooled vector is zero.
    """

    def __init__(self, ego_dim: int, item_dim: int, slots: int, hidden: int, layers: int) -> None:
        super().__init__()
        self.ego_dim, self.item_dim, self.slots = ego_dim, item_dim, slots
        self.in_dim = ego_dim + slots * (item_dim + 1)
        self.item = MLP(item_dim, None, hidden, layers)
        self.out_dim = ego_dim + self.item.out_dim

    def forward(self, x: Tensor) -> Tensor:
        ego = x[..., :self.ego_dim]
        slots = x[..., self.ego_dim:].unflatten(-1, (self.slots, self.item_dim + 1))
        present = slots[..., -1:] > 0.5  # imagined (decoded) flags are not exactly 0 / 1
        items = self.item(slots[..., :-1]).masked_fill(~present, -torch.inf)
        pooled = items.max(-2).values
        return torch.cat([ego, torch.where(present.any(-2), pooled, 0.0)], -1)


class ActorHead(nn.Module):
    """MLP -> a distribution over actions in [-1, 1] (``ACTOR_DIST_CLASSES``).

    The mean is tanh-bounded to the action box; the std lies in [min_std, max_std]
    (DreamerV3: sigmoid(raw + 2) starts it near max_std, i.e. exploring). Both
    distributions have the same parameters, so a checkpoint loads with either.
    """

    def __init__(
        self,
        in_dim: int,
        action_dim: int,
        hidden: int,
        layers: int,
        min_std: float = 0.1,
        max_std: float = 1.0,
        dist: str = "truncated_normal",
        encoder: ObstacleSetEncoder | None = None,
    ) -> None:
        super().__init__()
        if dist not in ACTOR_DIST_CLASSES:
            raise ValueError(f"actor distribution must be one of {tuple(ACTOR_DIST_CLASSES)}, "
                             f"got {dist!r}")
        if encoder is not None and encoder.in_dim != in_dim:
            raise ValueError(f"the encoder reads {encoder.in_dim} inputs, the actor {in_dim}")
        self.encoder = encoder
        self.mlp = MLP(in_dim if encoder is None else encoder.out_dim, 2 * action_dim, hidden,
                       layers)
        self.min_std, self.max_std = min_std, max_std
        self.dist = ACTOR_DIST_CLASSES[dist]

    def forward(self, features: Tensor) -> BoundedNormal:  # or its subclass TruncatedNormal
        if self.encoder is not None:
            features = self.encoder(features)
        mean, raw_std = self.mlp(features).chunk(2, dim=-1)
        std = (self.max_std - self.min_std) * torch.sigmoid(raw_std + 2.0) + self.min_std
        return self.dist(torch.tanh(mean), std)


def categorical_kl(logits_p: Tensor, logits_q: Tensor) -> Tensor:
    """KL[p || q] of categoricals over the last axis (inputs are log-probabilities or logits)."""
    log_p = F.log_softmax(logits_p, -1)
    log_q = F.log_softmax(logits_q, -1)
    return (log_p.exp() * (log_p - log_q)).sum(-1)

"""fosp_core.agent.networks: preprocessing, conv shapes, two-hot and actor distributions."""

from __future__ import annotations

import math

import pytest
import torch

from fosp_core.agent.networks import (
    MLP,
    ActorHead,
    BernoulliHead,
    BoundedNormal,
    ImageDecoder,
    ImageEncoder,
    ObstacleSetEncoder,
    TruncatedNormal,
    TwoHotDist,
    TwoHotHead,
    categorical_kl,
    preprocess_image,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_preprocess_image_range() -> None:
    image = torch.tensor([0, 51, 255], dtype=torch.uint8)
    # x / 255 - 0.5: 0 -> -0.5, 51 -> 0.2 - 0.5 = -0.3, 255 -> 0.5
    out = preprocess_image(image)
    assert out.dtype == torch.float32
    assert torch.allclose(out, torch.tensor([-0.5, -0.3, 0.5]))


def test_mlp_shapes() -> None:
    assert MLP(5, 3, 8, 2)(torch.zeros(4, 7, 5)).shape == (4, 7, 3)
    encoder = MLP(5, None, 8, 2)
    assert encoder.out_dim == 8 and encoder(torch.zeros(2, 5)).shape == (2, 8)
    assert MLP(5, 3, 8, 0)(torch.zeros(2, 5)).shape == (2, 3)


def test_image_encoder_decoder_shapes() -> None:
    encoder = ImageEncoder(depth=4)
    images = torch.randint(0, 256, (2, 3, 64, 64, 3), dtype=torch.uint8)
    features = encoder(images)
    assert features.shape == (2, 3, encoder.out_dim) and encoder.out_dim == 32 * 4 * 4
    decoder = ImageDecoder(in_dim=10, depth=4)
    assert decoder(torch.zeros(2, 3, 10)).shape == (2, 3, 64, 64, 3)
    with pytest.raises(ValueError):
        ImageEncoder(depth=4, image_size=48)


def test_two_hot_head_starts_at_zero_and_scores_targets() -> None:
    head = TwoHotHead(in_dim=6, hidden=8, layers=1)
    dist = head(torch.randn(4, 6))
    # The output layer starts at zero: uniform over 255 bins, symmetric around 0 -> mean 0,
    # and any target has -log p = log 255 = 5.541264.
    assert torch.allclose(dist.mean(), torch.zeros(4), atol=1e-4)
    assert torch.allclose(
        -dist.log_prob(torch.tensor([0.0, 1.0, -7.0, 300.0])),
        torch.full((4,), math.log(255)),
        atol=1e-5,
    )


def test_two_hot_dist_mean_decodes_a_peaked_distribution() -> None:
    # Bins (symlog space) [-2, -1, 0, 1, 2]; all mass on bin 1.0 -> mean symexp(1) = e - 1.
    logits = torch.tensor([-1e9, -1e9, -1e9, 0.0, -1e9])
    dist = TwoHotDist(logits, torch.linspace(-2.0, 2.0, 5))
    assert dist.mean().item() == pytest.approx(math.e - 1, rel=1e-6)


def test_bernoulli_head() -> None:
    dist = BernoulliHead(in_dim=3, hidden=4, layers=1)(torch.zeros(2, 5, 3))
    assert dist.log_prob(torch.ones(2, 5)).shape == (2, 5)


def test_truncated_normal_hand_values() -> None:
    dist = TruncatedNormal(torch.zeros(1), torch.ones(1))
    # Z = Phi(1) - Phi(-1) = 0.6826895
    # log p(0) = -0.5 ln(2 pi) - ln Z = -0.9189385 + 0.3817151 = -0.5372234
    assert dist.log_prob(torch.zeros(1)).item() == pytest.approx(-0.5372234, abs=1e-6)
    # H = ln(sqrt(2 pi e) Z) + (alpha phi(alpha) - beta phi(beta)) / (2 Z), alpha = -1, beta = 1
    #   = 1.4189385 - 0.3817151 + (-0.2419707 - 0.2419707) / 1.3653790
    #   = 1.4189385 - 0.3817151 - 0.3544375 = 0.6827859
    assert dist.entropy().item() == pytest.approx(0.6827859, abs=1e-6)


def test_truncated_normal_is_a_density_on_the_box() -> None:
    loc, scale = torch.tensor([0.7]), torch.tensor([0.4])
    dist = TruncatedNormal(loc, scale)
    grid = torch.linspace(-1, 1, 20001).unsqueeze(-1)
    density = dist.log_prob(grid).exp()
    dx = 2 / 20000
    assert torch.trapezoid(density, dx=dx).item() == pytest.approx(1.0, abs=1e-4)
    entropy = -torch.trapezoid(density * dist.log_prob(grid), dx=dx).item()
    assert dist.entropy().item() == pytest.approx(entropy, abs=1e-4)
    # Actions on the bounds (a saturated input device) have a finite log-prob.
    assert torch.isfinite(dist.log_prob(torch.tensor([[1.0], [-1.0]]))).all()


def test_truncated_normal_samples_in_bounds_with_gradients() -> None:
    loc = torch.full((2000, 6), 0.9, requires_grad=True)
    scale = torch.full((2000, 6), 0.5, requires_grad=True)
    sample = TruncatedNormal(loc, scale).rsample()
    assert sample.min() >= -1 and sample.max() <= 1
    sample.mean().backward()
    assert torch.isfinite(loc.grad).all() and loc.grad.abs().sum() > 0


def test_actor_head_shapes_and_bounds() -> None:
    head = ActorHead(in_dim=10, action_dim=6, hidden=16, layers=2, min_std=0.1, max_std=1.0)
    dist = head(torch.randn(4, 5, 10))
    action = dist.sample()
    assert action.shape == (4, 5, 6)
    assert dist.log_prob(action).shape == (4, 5) and dist.entropy().shape == (4, 5)
    assert ((dist.scale >= 0.1) & (dist.scale <= 1.0)).all()
    assert (dist.mode.abs() < 1).all()


def test_obstacle_set_encoder_pools_present_items_in_any_order() -> None:
    # layers=0: the item encoder is the identity, so the pooled vector is the elementwise max
    # of the present items, by hand.
    enc = ObstacleSetEncoder(ego_dim=2, item_dim=2, slots=3, hidden=8, layers=0)
    ego = [7.0, -7.0]
    a, b, c = [1.0, -4.0], [3.0, -5.0], [9.0, 9.0]
    x = torch.tensor([ego + a + [1.0] + b + [1.0] + c + [0.0]])  # c is in an empty slot
    assert enc.in_dim == 2 + 3 * 3 and enc.out_dim == 4
    assert enc(x).tolist() == [[7.0, -7.0, 3.0, -4.0]]
    swapped = torch.tensor([ego + c + [0.0] + b + [1.0] + a + [1.0]])
    assert torch.equal(enc(swapped), enc(x))
    # A third obstacle counts like the others; none at all pools to zero.
    third = torch.tensor([ego + a + [1.0] + b + [1.0] + c + [1.0]])
    assert enc(third).tolist() == [[7.0, -7.0, 9.0, 9.0]]
    empty = torch.tensor([ego + a + [0.0] + b + [0.0] + c + [0.0]])
    assert enc(empty).tolist() == [[7.0, -7.0, 0.0, 0.0]]


def test_actor_head_behind_an_obstacle_set_encoder_learns_through_it() -> None:
    enc = ObstacleSetEncoder(ego_dim=3, item_dim=6, slots=4, hidden=16, layers=2)
    head = ActorHead(enc.in_dim, 6, hidden=16, layers=2, dist="normal", encoder=enc)
    x = torch.randn(5, enc.in_dim)
    x[:, 3 + 6::7] = 1.0  # every slot present
    loss = -head(x).log_prob(torch.zeros(5, 6)).mean()
    loss.backward()
    assert enc.item.body[0].weight.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="reads 31 inputs"):
        ActorHead(30, 6, hidden=16, layers=2, encoder=enc)


def test_bounded_normal_hand_values() -> None:
    dist = BoundedNormal(torch.tensor([0.2, 0.2]), torch.tensor([0.5, 0.5]))
    # per dimension, z = (0.7 - 0.2) / 0.5 = 1: -0.5 - ln 0.5 - 0.5 ln(2 pi)
    #   = -0.5 + 0.6931472 - 0.9189385 = -0.7257913; two dimensions: -1.4515826
    assert dist.log_prob(torch.tensor([0.7, 0.7])).item() == pytest.approx(-1.4515826, abs=1e-6)
    # H = 0.5 ln(2 pi e) + ln 0.5 = 1.4189385 - 0.6931472 = 0.7257913 per dimension
    assert dist.entropy().item() == pytest.approx(1.4515826, abs=1e-6)
    assert torch.equal(dist.mode, torch.tensor([0.2, 0.2]))
    # Samples are clipped to the box: with the mean at 0.9 many sit exactly on 1.
    loc = torch.full((2000, 6), 0.9, requires_grad=True)
    sample = BoundedNormal(loc, torch.full((2000, 6), 0.5)).rsample()
    assert sample.min() >= -1 and sample.max() <= 1 and (sample == 1).float().mean() > 0.2
    sample.mean().backward()
    assert loc.grad.abs().sum() > 0


@pytest.mark.parametrize("dist", ["normal", "truncated_normal"])
def test_actor_head_distributions_share_parameters(dist) -> None:
    head = ActorHead(in_dim=10, action_dim=6, hidden=16, layers=2, dist=dist)
    assert type(head(torch.zeros(1, 10))) is (BoundedNormal, TruncatedNormal)[dist != "normal"]
    other = ActorHead(10, 6, 16, 2, dist="truncated_normal" if dist == "normal" else "normal")
    other.load_state_dict(head.state_dict())  # a checkpoint loads with either
    with pytest.raises(ValueError, match="actor distribution"):
        ActorHead(10, 6, 16, 2, dist="beta")


def test_bounded_normal_clones_the_mean_where_the_truncated_one_overshoots() -> None:
    # What "normal" is for: regress both onto the same noisy actions (means 0.62 and
    # -0.87, std 0.15, clipped to the box) for 300 steps at the actor's rate. The truncated
    # normal's likelihood pays for its mass outside the box, so while its std is wide it
    # pushes the mean towards the bound: a bolder action than any demonstration's mean.
    x = torch.ones(256, 4)
    g = torch.Generator().manual_seed(0)
    y = (torch.tensor([0.6, -0.9]) + 0.15 * torch.randn(256, 2, generator=g)).clamp(-1, 1)
    error = {}
    for dist in ("normal", "truncated_normal"):
        torch.manual_seed(0)
        head = ActorHead(4, 2, 32, 2, dist=dist)
        opt = torch.optim.Adam(head.parameters(), lr=3e-4)
        for _ in range(300):
            loss = -head(x).log_prob(y).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
        error[dist] = (head(x[:1]).mode[0] - y.mean(0)).abs().max().item()
    assert error["normal"] < 0.02
    assert error["truncated_normal"] > 0.05


def test_categorical_kl() -> None:
    # KL[(0.5, 0.5) || (0.25, 0.75)] = 0.5 ln 2 + 0.5 ln(2/3) = 0.1438410
    p = torch.tensor([0.5, 0.5]).log()
    q = torch.tensor([0.25, 0.75]).log()
    assert categorical_kl(p, q).item() == pytest.approx(0.1438410, abs=1e-6)
    assert categorical_kl(p, p).item() == pytest.approx(0.0, abs=1e-7)

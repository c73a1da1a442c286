"""Image augmentation of the world model's batches (fosp_core.agent.augment), on hand-made
images."""

import pytest
import torch

from fosp_core.agent.agent import Agent
from fosp_core.agent.augment import augment_images, relight_sequences, shift_sequences
from fosp_core.agent.config import AgentConfig
from tests.agent_helpers import tiny_config
from tests.test_agent_actor_critic import replay_for

# One sequence of two 2 x 2 frames, 1 channel repeated to 3: pixel values 10 20 / 30 40
# in frame 0, and 50 60 / 70 80 in frame 1.
FRAMES = torch.tensor([[[10, 20], [30, 40]], [[50, 60], [70, 80]]], dtype=torch.uint8)
IMAGES = FRAMES[None, :, :, :, None].repeat(1, 1, 1, 1, 3)  # (1, 2, 2, 2, 3)


def _frames(images):
    return images[0, :, :, :, 0].tolist()


@pytest.mark.parametrize(("dy", "dx", "expected"), [
    (1, 1, [[[10, 20], [30, 40]], [[50, 60], [70, 80]]]),  # the centre: unchanged
    (0, 0, [[[10, 10], [10, 10]], [[50, 50], [50, 50]]]),  # up-left: the corner repeated
    (0, 1, [[[10, 20], [10, 20]], [[50, 60], [50, 60]]]),  # up: the top row repeated
    (2, 2, [[[40, 40], [40, 40]], [[80, 80], [80, 80]]]),  # down-right
])
def test_shift_crops_the_edge_padded_frames_at_one_offset_per_sequence(dy, dx, expected):
    out = shift_sequences(IMAGES, 1, torch.tensor([dy]), torch.tensor([dx]))
    assert out.dtype == torch.uint8 and out.shape == IMAGES.shape
    assert _frames(out) == expected
    assert torch.equal(out[..., 0], out[..., 2])  # channels move together


def test_relight_scales_each_channel_rounds_and_clips():
    gains = torch.tensor([[0.5, 1.5, 4.0]])
    out = relight_sequences(IMAGES, gains)
    assert out[0, 0, :, :, 0].tolist() == [[5, 10], [15, 20]]
    assert out[0, 0, :, :, 1].tolist() == [[15, 30], [45, 60]]
    assert out[0, 1, :, :, 2].tolist() == [[200, 240], [255, 255]]  # 280, 320 clipped


def test_augment_is_off_at_zero_and_keeps_offsets_and_gains_in_range():
    assert augment_images(IMAGES, 0, 0.0) is IMAGES
    torch.manual_seed(0)
    images = torch.randint(100, 190, (8, 3, 6, 6, 3), dtype=torch.uint8)
    lit = augment_images(images, 0, 0.3).float() / images.float()
    # One gain per sequence and channel, in [0.7, 1.3], up to rounding (0.5 / 100 at most).
    spread = lit.amax((1, 2, 3)) - lit.amin((1, 2, 3))
    assert spread.shape == (8, 3) and spread.max() <= 0.01
    assert lit.min() >= 0.695 and lit.max() <= 1.305 and lit.std() > 0.05  # gains differ
    shifted = augment_images(images, 2, 0.0)
    offsets = [(dy, dx) for dy in range(5) for dx in range(5)]
    for b in range(8):  # each sequence is one of the 25 pad-2 crops, all its frames alike
        assert any(torch.equal(shifted[b:b + 1], shift_sequences(
            images[b:b + 1], 2, torch.tensor([dy]), torch.tensor([dx]))) for dy, dx in offsets)


def test_augmentation_is_off_in_the_paper_preset_and_checked():
    assert AgentConfig().model.aug_shift == 0 and AgentConfig().model.aug_light == 0.0
    with pytest.raises(ValueError, match="model.aug_light in"):
        tiny_config(obs_mode="image", model={"aug_light": 1.0})


def test_an_augmented_image_train_step_trains_on_the_shifted_images(monkeypatch):
    config = tiny_config(obs_mode="image", model={"aug_shift": 4, "aug_light": 0.2})
    batch = replay_for(config).sample()
    seen = []
    agent = Agent(config)
    loss = agent.world_model.loss
    monkeypatch.setattr(agent.world_model, "loss", lambda b: seen.append(b["image"]) or loss(b))
    metrics = agent.train_step(dict(batch))
    assert seen and not torch.equal(seen[0].cpu(), torch.as_tensor(batch["image"]))
    assert metrics["model/image_loss"] > 0

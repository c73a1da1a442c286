"""Image augmentation of the world model's training batches (not in the paper; off in both
presets, on in the ``safe-clone-aug`` recipe).

A camera moved by a few centimetres, or a change of light, shows the encoder images it never
saw, and the offline policy that reads its features fails (docs/transfer.md). Training the
world model on randomly shifted and re-lit copies of the dataset's images teaches the encoder
to map them to the same state. Both transforms act on a whole sequence alike, as a moved
camera or a dimmer lamp does, so the dynamics the RSSM learns stay those of one camera.

- ``shift_sequences``: DrQ's random shift (Kostrikov et al., 2020): pad each frame by
  ``pad`` pixels, repeating its edge, and crop it back at an offset drawn per sequence.
- ``relight_sequences``: scale each colour channel of a sequence by a gain drawn in
  [1 - light, 1 + light].
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def shift_sequences(images: Tensor, pad: int, dy: Tensor, dx: Tensor) -> Tensor:
    """uint8 images (B, T, H, W, C), each sequence b cropped at rows dy[b] : dy[b] + H and
    columns dx[b] : dx[b] + W of its frames padded by ``pad`` (edge pixels repeated); offsets
    in [0, 2 * pad], where ``pad`` leaves the frames as they were."""
    b, t, h, w, c = images.shape
    planes = images.permute(0, 1, 4, 2, 3).reshape(b, t * c, h, w).float()
    padded = F.pad(planes, (pad, pad, pad, pad), mode="replicate")
    crops = torch.stack([padded[i, :, int(dy[i]):int(dy[i]) + h, int(dx[i]):int(dx[i]) + w]
                         for i in range(b)])
    return crops.reshape(b, t, c, h, w).permute(0, 1, 3, 4, 2).to(images.dtype)


def relight_sequences(images: Tensor, gains: Tensor) -> Tensor:
    """uint8 images (B, T, H, W, C) with channel k of sequence b scaled by gains[b, k],
    rounded and clipped to [0, 255]."""
    scaled = images.float() * gains[:, None, None, None, :].to(images.device)
    return scaled.round().clamp(0, 255).to(images.dtype)


def augment_images(images: Tensor, shift: int, light: float) -> Tensor:
    """Both transforms with random offsets and gains (torch's global generator, which the
    run's seed sets); ``shift=0`` and ``light=0`` return ``images`` itself."""
    b, c = images.shape[0], images.shape[-1]
    if shift > 0:
        dy, dx = torch.randint(0, 2 * shift + 1, (2, b))
        images = shift_sequences(images, shift, dy, dx)
    if light > 0:
        images = relight_sequences(images, 1 + light * (2 * torch.rand(b, c) - 1))
    return images

"""07 · random crop with reflect padding."""

import torch
import torch.nn.functional as F


def random_crop(images: torch.Tensor, padding: int) -> torch.Tensor:
    n, _, h, w = images.shape
    # reflect padding mirrors the image at its border (without repeating the edge pixel); F.pad's reflect mode
    # needs a float tensor, so pad a float copy and convert back at the end
    padded = F.pad(images.float(), (padding, padding, padding, padding), mode="reflect")
    out = torch.empty_like(images)
    for i in range(n):  # one window per image, anywhere in the padded image
        top = int(torch.randint(0, 2 * padding + 1, ()))
        left = int(torch.randint(0, 2 * padding + 1, ()))
        out[i] = padded[i, :, top : top + h, left : left + w].to(images.dtype)
    return out

"""01 · top-k accuracy from logits."""

import torch


def topk_accuracy(logits: torch.Tensor, labels: torch.Tensor, k: int) -> float:
    # A stable sort keeps equal scores in class order, so a tie goes to the lower class index.
    # (torch.topk breaks ties however its kernel likes, which is how one image got two predictions.)
    ranked = logits.sort(dim=1, descending=True, stable=True).indices[:, :k]  # (n, k) class indices
    hit = (ranked == labels[:, None]).any(dim=1)  # is the label among them?
    return hit.float().mean().item()

"""Conservation of pxp's transformer LRP (AttnLRP) on torchvision ViTs with biases zeroed.

For each model (random weights, seeded; torchvision zeroes the classifier, so it gets normal(0, 0.02)
weights) and each random image, explains the logit of a random class on a copy with every bias,
LayerNorm β, class token and position embedding zero. AttnLRP's softmax rule is not conservative
(its linearisation's bias keeps a share), every other rule is: so pixel relevance + the softmax
share must equal the logit. Also checks that the heads' relevance sums to the relevance at each
attention output. Prints a markdown table.

    .venv/bin/python bench/pxp_vit_conservation.py [--models small vit_b_16] [--images 1] [--epsilon 1e-9]
"""

from __future__ import annotations

import argparse
import time

import torch
from torch import nn
from torchvision.models import VisionTransformer, vit_b_16

from secateur.plugins.lrp_vit import TransformerLRP, without_biases

MODELS = {
    "small": lambda: VisionTransformer(
        image_size=32, patch_size=8, num_layers=2, num_heads=4, hidden_dim=64, mlp_dim=128, num_classes=10
    ),
    "vit_b_16": lambda: vit_b_16(weights=None),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", choices=sorted(MODELS), default=["small", "vit_b_16"])
    parser.add_argument("--images", type=int, default=1, help="random images per model")
    parser.add_argument("--epsilon", type=float, default=1e-9)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(1)
    print("| model | image | logit | Σ R pixels | softmax biases | sum | relative error | head-sum error | seconds |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name in args.models:
        torch.manual_seed(args.seed)
        model = MODELS[name]().eval()
        nn.init.normal_(model.heads[-1].weight, std=0.02)
        lrp = TransformerLRP(without_biases(model), torch.device("cpu"), args.epsilon)
        size, classes = model.image_size, model.heads[-1].out_features
        generator = torch.Generator().manual_seed(args.seed)
        for index in range(args.images):
            image = torch.randn(1, 3, size, size, generator=generator)
            label = torch.randint(classes, (1,), generator=generator)
            start = time.perf_counter()
            found = lrp.explain(image, label)
            seconds = time.perf_counter() - start
            logit = found.logits[0, label].item()  # relevance started at 1 = logit / logit: scale back to the logit
            pixels, kept = found.pixels.sum().item() * logit, found.absorbed.item() * logit
            error = abs(pixels + kept - logit) / abs(logit)
            heads = max(
                (found.units[f"{layer}:heads"].sum(1) - found.attention[layer]).abs().max().item()
                / max(found.attention[layer].abs().max().item(), 1e-12)
                for layer in found.attention
            )
            print(
                f"| {name} | {index} | {logit:.6g} | {pixels:.6g} | {kept:.6g} | {pixels + kept:.6g} | {error:.1e}"
                f" | {heads:.1e} | {seconds:.1f} |"
            )


if __name__ == "__main__":
    main()

"""Train the two embedded demo models on the generated shapes data set.

Usage (from the repository, in the project's environment)::

    python -m secateur.assets.train_demo --model demo --out assets/demo_resnet.safetensors
    python -m secateur.assets.train_demo --model demo-vgg --out assets/demo_vgg.safetensors

The recipe is fixed and seeded: SGD with Nesterov momentum, one-cycle learning
rate, weight decay, random crops (reflect padding 4) and horizontal flips, on
the train split only. Test accuracy is measured once, at the end, and stored in
the weight file's metadata beside the recipe. The figures reached on 2 CPU
cores are in assets/README.md.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from torch import nn

from secateur.core.data.demo import demo_tensors
from secateur.core.model.demo_architectures import DemoResNet, DemoVGG

RECIPES = {
    "demo": {"factory": DemoResNet, "epochs": 30, "lr": 0.1, "weight_decay": 1e-3},
    "demo-vgg": {"factory": DemoVGG, "epochs": 50, "lr": 0.05, "weight_decay": 2e-3},
}
BATCH_SIZE = 128
SEED = 0


def augment(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Random 32×32 crops of the reflect-padded batch, half of them mirrored."""
    count, _, height, width = images.shape
    padded = F.pad(images, (4, 4, 4, 4), mode="reflect")
    offsets = torch.randint(0, 9, (count, 2), generator=generator)
    crops = torch.stack(
        [padded[i, :, dy : dy + height, dx : dx + width] for i, (dy, dx) in enumerate(offsets.tolist())]
    )
    flip = torch.rand(count, generator=generator) < 0.5
    crops[flip] = crops[flip].flip(-1)
    return crops


@torch.no_grad()
def accuracy(model: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> float:
    """Top-1 accuracy of ``model`` in eval mode, in percent."""
    model.eval()
    correct = 0
    for start in range(0, len(images), 500):
        logits = model(images[start : start + 500].contiguous(memory_format=torch.channels_last))
        correct += int((logits.argmax(1) == labels[start : start + 500]).sum())
    return 100.0 * correct / len(images)


def train(name: str, overrides: dict[str, float] | None = None) -> tuple[nn.Module, dict[str, object]]:
    """Train the demo model ``name`` (``overrides`` replace recipe entries); returns it with a record of the run."""
    recipe = {**RECIPES[name], **(overrides or {})}
    torch.manual_seed(SEED)
    generator = torch.Generator().manual_seed(SEED)
    model = recipe["factory"]().to(memory_format=torch.channels_last)
    images, labels = demo_tensors("train")
    steps_per_epoch = len(images) // BATCH_SIZE
    optimizer = torch.optim.SGD(
        model.parameters(), lr=recipe["lr"], momentum=0.9, nesterov=True, weight_decay=recipe["weight_decay"]
    )
    schedule = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=recipe["lr"], epochs=recipe["epochs"], steps_per_epoch=steps_per_epoch
    )
    started = time.perf_counter()
    for epoch in range(recipe["epochs"]):
        model.train()
        order = torch.randperm(len(images), generator=generator)
        total_loss = 0.0
        for step in range(steps_per_epoch):
            index = order[step * BATCH_SIZE : (step + 1) * BATCH_SIZE]
            batch = augment(images[index], generator).contiguous(memory_format=torch.channels_last)
            loss = F.cross_entropy(model(batch), labels[index])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            total_loss += loss.detach().item()
        print(
            f"{name} epoch {epoch + 1}/{recipe['epochs']} loss {total_loss / steps_per_epoch:.4f}"
            f" ({time.perf_counter() - started:.0f} s)",
            flush=True,
        )
    test_images, test_labels = demo_tensors("test")
    record = {
        "model": name,
        "epochs": recipe["epochs"],
        "max_lr": recipe["lr"],
        "batch_size": BATCH_SIZE,
        "weight_decay": recipe["weight_decay"],
        "seed": SEED,
        "train_seconds": round(time.perf_counter() - started, 1),
        "threads": torch.get_num_threads(),
        "test_accuracy": round(accuracy(model, test_images, test_labels), 2),
    }
    return model, record


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=sorted(RECIPES), required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--epochs", type=int, help="override the recipe's number of epochs")
    parser.add_argument("--weight-decay", type=float, help="override the recipe's weight decay")
    args = parser.parse_args()
    overrides = {"epochs": args.epochs, "weight_decay": args.weight_decay}
    model, record = train(args.model, {key: value for key, value in overrides.items() if value is not None})
    state = {key: value.contiguous() for key, value in model.state_dict().items()}
    temporary = args.out.with_suffix(".tmp")
    save_file(state, str(temporary), metadata={"secateur_demo": json.dumps(record)})
    temporary.replace(args.out)
    print(json.dumps(record, indent=2))


if __name__ == "__main__":
    main()

"""Train LeNet-5 built from fastconv modules on scikit-learn's digits (no download).

The 8x8 digit images are upscaled to LeNet-5's 32x32 input (nearest
neighbour, 4x), split 75/25 into train and test sets, and LeNet-5 exactly as
in the lecture notes (tanh, average pooling) is trained with Adam.  Every
convolution and pooling, forward and backward, runs on fastconv's kernels.

    python examples/train_lenet5_digits.py            # ~97-99% test accuracy
    python examples/train_lenet5_digits.py --epochs 3 --subset 300
"""
from __future__ import annotations

import argparse
import time

import numpy as np


def load_digits_32x32(seed: int = 0, subset: int | None = None):
    """(x_train, y_train, x_test, y_test) as float32 (N, 1, 32, 32) in [0, 1] and int64."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split
    digits = load_digits()
    images = digits.images.astype(np.float32) / 16.0                # (1797, 8, 8)
    images = images.repeat(4, axis=1).repeat(4, axis=2)[:, None]    # (1797, 1, 32, 32)
    labels = digits.target.astype(np.int64)
    if subset is not None:
        images, labels = images[:subset], labels[:subset]
    return train_test_split(images, labels, test_size=0.25, random_state=seed,
                            stratify=labels if subset is None else None)


def train(epochs: int = 15, batch_size: int = 32, lr: float = 2e-3, seed: int = 0,
          subset: int | None = None, log=print):
    """Train and return (model, per-epoch losses, test accuracy)."""
    import torch

    from fastconv.models import lenet5_module

    torch.manual_seed(seed)
    x_train, x_test, y_train, y_test = load_digits_32x32(seed, subset)
    x_train, x_test = torch.from_numpy(x_train), torch.from_numpy(x_test)
    y_train, y_test = torch.from_numpy(y_train), torch.from_numpy(y_test)
    model = lenet5_module()
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    loss_fn = torch.nn.CrossEntropyLoss()
    losses = []
    gen = torch.Generator().manual_seed(seed)
    for epoch in range(epochs):
        model.train()
        order = torch.randperm(len(x_train), generator=gen)
        total, start = 0.0, time.perf_counter()
        for i in range(0, len(order), batch_size):
            idx = order[i:i + batch_size]
            opt.zero_grad()
            loss = loss_fn(model(x_train[idx]), y_train[idx])
            loss.backward()
            opt.step()
            total += loss.item() * len(idx)
        losses.append(total / len(x_train))
        accuracy = evaluate(model, x_test, y_test)
        log(f"epoch {epoch + 1:2d}: train loss {losses[-1]:.4f}, test accuracy "
            f"{100 * accuracy:.2f}% ({time.perf_counter() - start:.1f} s)")
    return model, losses, evaluate(model, x_test, y_test)


def evaluate(model, x, y) -> float:
    import torch
    model.eval()
    with torch.no_grad():
        return float((model(x).argmax(1) == y).float().mean())


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--subset", type=int, default=None, help="use only the first N images")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    _model, _losses, accuracy = train(args.epochs, args.batch_size, args.lr, args.seed,
                                      args.subset)
    print(f"final test accuracy {100 * accuracy:.2f}% in {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()

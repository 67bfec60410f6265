#!/usr/bin/env python3
"""PyTorch's training step for a zoo model, timed like `netc bench`: SGD with momentum 0.9,
cross-entropy, synthetic data, untimed warm-up steps, then the median of timed steps.

  python benches/pytorch/train_step.py MODEL [--batch N] [--steps N] [--threads N] [--compile]

Prints images/s. Run it under `/usr/bin/time -f %M` for the peak memory (maximum resident set)
to compare with `netc bench` under the same. The models are tests/pytorch/reference.py's, the
zoo written again in PyTorch layer for layer.
"""

import argparse
import os
import statistics
import sys
import time

import torch
import torch.nn as nn

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "tests", "pytorch"))
import reference  # noqa: E402

# The input of each model's .net file by default: (channels, height, width), classes.
INPUTS = {
    "mlp": ((1, 28, 28), 10),
    "mnist_cnn": ((1, 28, 28), 10),
    "resnet_small": ((3, 32, 32), 10),
    "googlenet": ((3, 224, 224), 1000),
    "mobilenet_v1": ((3, 224, 224), 1000),
}


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("model", choices=sorted(INPUTS))
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--compile", action="store_true", help="torch.compile the model")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    shape, classes = INPUTS[args.model]
    model, _ = getattr(reference, args.model)()
    model.train()
    if args.compile:
        model = torch.compile(model)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    loss_fn = nn.CrossEntropyLoss()
    x = torch.randn(args.batch, *shape)
    y = torch.randint(0, classes, (args.batch,))

    def step():
        optimizer.zero_grad(set_to_none=False)
        loss = loss_fn(model(x), y)
        loss.backward()
        optimizer.step()

    for _ in range(3):
        step()
    times = []
    for _ in range(args.steps):
        started = time.perf_counter()
        step()
        times.append(time.perf_counter() - started)
    median = statistics.median(times)
    print(f"{args.model}: batch {args.batch}, {args.threads} threads, "
          f"{median * 1e3:.3f} ms per step, {args.batch / median:.1f} images/s")


if __name__ == "__main__":
    main()

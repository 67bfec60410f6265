#!/usr/bin/env python3
"""netc's training step against PyTorch's (or JAX's), in turn: `netc bench` and the other's
train_step.py alternate, pair after pair, so that a change of load on a shared machine falls on
both sides; prints each pair's images/s and ratio, then the medians.

  python benches/compare.py MODEL [--batch N] [--pairs N] [--steps N] [--their-steps N]
                            [--threads N] [--compile | --against jax] [--netc PATH]

Run it with the Python that has torch (benches/pytorch/train_step.py's), or jax for `--against
jax` (benches/jax/train_step.py's, which always jit-compiles); `--netc` is the netc binary (by
default target/release/netc in this repository).
"""

import argparse
import json
import os
import re
import statistics
import subprocess
import sys

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")


def netc_images_per_s(args):
    model = os.path.join(ROOT, "models", f"{args.model}.net")
    command = [args.netc, "bench", model, "--batch", str(args.batch), "--steps", str(args.steps),
               "--threads", str(args.threads), "--json"]
    run = subprocess.run(command, capture_output=True, text=True)
    if run.returncode != 0:
        sys.exit(f"netc bench failed:\n{run.stderr}")
    return json.loads(run.stdout)["images_per_s"]


def their_images_per_s(args):
    script = os.path.join(ROOT, "benches", "jax" if args.against == "jax" else "pytorch",
                          "train_step.py")
    command = [sys.executable, script, args.model, "--batch", str(args.batch),
               "--steps", str(args.their_steps), "--threads", str(args.threads)]
    if args.compile:
        command.append("--compile")
    run = subprocess.run(command, capture_output=True, text=True)
    found = re.search(r"([0-9.]+) images/s", run.stdout)
    if run.returncode != 0 or not found:
        sys.exit(f"{script} failed:\n{run.stdout}{run.stderr}")
    return float(found.group(1))


def positive(text):
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} is not at least 1")
    return value


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("model")
    parser.add_argument("--batch", type=positive, default=32)
    parser.add_argument("--pairs", type=positive, default=3)
    parser.add_argument("--steps", type=positive, default=20, help="netc's timed steps per run")
    parser.add_argument("--their-steps", "--torch-steps", type=positive, default=20,
                        help="PyTorch's (or JAX's) timed steps per run")
    parser.add_argument("--threads", type=positive, default=os.cpu_count())
    parser.add_argument("--compile", action="store_true", help="torch.compile PyTorch's model")
    parser.add_argument("--against", choices=["torch", "jax"], default="torch",
                        help="the framework netc runs against")
    parser.add_argument("--netc", default=os.path.join(ROOT, "target", "release", "netc"))
    args = parser.parse_args()
    if not os.access(args.netc, os.X_OK):
        parser.error(f"no netc binary at {args.netc}: build it with `cargo build --release`, "
                     "or name one with --netc")
    if not os.path.exists(os.path.join(ROOT, "models", f"{args.model}.net")):
        parser.error(f"no model `{args.model}`: the names are those of models/*.net")
    if args.compile and args.against == "jax":
        parser.error("--compile is torch.compile; JAX's step is always jit-compiled by XLA")
    if args.against == "jax":
        side = "JAX/XLA"
    else:
        side = "torch.compile" if args.compile else "PyTorch eager"
    netc, theirs, ratios = [], [], []
    for pair in range(1, args.pairs + 1):
        netc.append(netc_images_per_s(args))
        theirs.append(their_images_per_s(args))
        ratios.append(netc[-1] / theirs[-1])
        print(f"{args.model} batch {args.batch}, pair {pair}: netc {netc[-1]:.1f} images/s, "
              f"{side} {theirs[-1]:.1f}, ratio {ratios[-1]:.3f}", flush=True)
    print(f"medians: netc {statistics.median(netc):.1f} images/s, {side} "
          f"{statistics.median(theirs):.1f}, ratio {statistics.median(ratios):.3f} "
          f"(best {side} run {max(theirs):.1f}: netc's median is "
          f"{statistics.median(netc) / max(theirs):.3f}x)")


if __name__ == "__main__":
    main()

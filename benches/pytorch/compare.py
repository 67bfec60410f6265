#!/usr/bin/env python3
"""netc's training step against PyTorch's, in turn: `netc bench` and train_step.py alternate,
pair after pair, so that a change of load on a shared machine falls on both sides; prints each
pair's images/s and ratio, then the medians.

  python benches/pytorch/compare.py MODEL [--batch N] [--pairs N] [--steps N] [--torch-steps N]
                                    [--threads N] [--compile] [--netc PATH]

Run it with the Python that has torch (train_step.py's); `--netc` is the netc binary (by default
target/release/netc in this repository).
"""

import argparse
import json
import os
import re
import statistics
import subprocess
import sys

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..")


def netc_images_per_s(args):
    model = os.path.join(ROOT, "models", f"{args.model}.net")
    command = [args.netc, "bench", model, "--batch", str(args.batch), "--steps", str(args.steps),
               "--threads", str(args.threads), "--json"]
    run = subprocess.run(command, capture_output=True, text=True)
    if run.returncode != 0:
        sys.exit(f"netc bench failed:\n{run.stderr}")
    return json.loads(run.stdout)["images_per_s"]


def torch_images_per_s(args):
    script = os.path.join(os.path.dirname(os.path.abspath(__file__)), "train_step.py")
    command = [sys.executable, script, args.model, "--batch", str(args.batch),
               "--steps", str(args.torch_steps), "--threads", str(args.threads)]
    if args.compile:
        command.append("--compile")
    run = subprocess.run(command, capture_output=True, text=True)
    found = re.search(r"([0-9.]+) images/s", run.stdout)
    if run.returncode != 0 or not found:
        sys.exit(f"train_step.py failed:\n{run.stdout}{run.stderr}")
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
    parser.add_argument("--torch-steps", type=positive, default=20,
                        help="PyTorch's timed steps per run")
    parser.add_argument("--threads", type=positive, default=os.cpu_count())
    parser.add_argument("--compile", action="store_true", help="torch.compile PyTorch's model")
    parser.add_argument("--netc", default=os.path.join(ROOT, "target", "release", "netc"))
    args = parser.parse_args()
    if not os.access(args.netc, os.X_OK):
        parser.error(f"no netc binary at {args.netc}: build it with `cargo build --release`, "
                     "or name one with --netc")
    if not os.path.exists(os.path.join(ROOT, "models", f"{args.model}.net")):
        parser.error(f"no model `{args.model}`: the names are those of models/*.net")
    side = "torch.compile" if args.compile else "PyTorch eager"
    netc, torch, ratios = [], [], []
    for pair in range(1, args.pairs + 1):
        netc.append(netc_images_per_s(args))
        torch.append(torch_images_per_s(args))
        ratios.append(netc[-1] / torch[-1])
        print(f"{args.model} batch {args.batch}, pair {pair}: netc {netc[-1]:.1f} images/s, "
              f"{side} {torch[-1]:.1f}, ratio {ratios[-1]:.3f}", flush=True)
    print(f"medians: netc {statistics.median(netc):.1f} images/s, {side} "
          f"{statistics.median(torch):.1f}, ratio {statistics.median(ratios):.3f} "
          f"(best {side} run {max(torch):.1f}: netc's median is {statistics.median(netc) / max(torch):.3f}x)")


if __name__ == "__main__":
    main()

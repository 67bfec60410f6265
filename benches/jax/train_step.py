#!/usr/bin/env python3
"""JAX's training step for a zoo model, jit-compiled by XLA and timed like `netc bench`: SGD with
momentum 0.9 (PyTorch's form: v = 0.9 v + g, p -= lr v), softmax cross-entropy, synthetic data,
untimed warm-up steps, then the median of timed steps, each waited for whole.

  python benches/jax/train_step.py MODEL [--batch N] [--steps N] [--threads N]

Prints images/s, as benches/pytorch/train_step.py does, so that benches/compare.py can run it
(`--against jax`). Only `mlp` is written here, the one model netc's targets compare with JAX.
Parameters and velocities are donated to the step, so XLA updates them in place.
"""

import argparse
import os
import statistics
import sys
import time

# The models, as their .net files define them: the widths of the input and of each dense layer
# after it, the last being the classes.
MODELS = {
    "mlp": [1 * 28 * 28, 256, 128, 10],
}


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("model", choices=sorted(MODELS))
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    args = parser.parse_args()
    if args.batch < 1 or args.steps < 1 or args.threads < 1:
        parser.error("--batch, --steps and --threads must be at least 1")
    # XLA sizes its thread pools from the CPUs the process may run on, when it starts.
    os.sched_setaffinity(0, sorted(os.sched_getaffinity(0))[: args.threads])
    import jax
    import jax.numpy as jnp

    widths = MODELS[args.model]
    keys = jax.random.split(jax.random.PRNGKey(0), len(widths) + 1)
    # PyTorch's default initialisation of a dense layer: U(-1/sqrt(in), 1/sqrt(in)).
    params = []
    for key, (fan_in, fan_out) in zip(keys, zip(widths, widths[1:])):
        bound = 1.0 / fan_in ** 0.5
        w_key, b_key = jax.random.split(key)
        params.append((jax.random.uniform(w_key, (fan_in, fan_out), jnp.float32, -bound, bound),
                       jax.random.uniform(b_key, (fan_out,), jnp.float32, -bound, bound)))
    velocities = jax.tree_util.tree_map(jnp.zeros_like, params)
    x = jax.random.normal(keys[-2], (args.batch, widths[0]), jnp.float32)
    y = jax.random.randint(keys[-1], (args.batch,), 0, widths[-1])

    def loss_of(params):
        h = x
        for i, (w, b) in enumerate(params):
            h = h @ w + b
            if i < len(params) - 1:
                h = jax.nn.relu(h)
        log_p = jax.nn.log_softmax(h)
        return -jnp.mean(jnp.take_along_axis(log_p, y[:, None], axis=1))

    def step(params, velocities):
        loss, grads = jax.value_and_grad(loss_of)(params)
        velocities = jax.tree_util.tree_map(lambda v, g: 0.9 * v + g, velocities, grads)
        params = jax.tree_util.tree_map(lambda p, v: p - 0.01 * v, params, velocities)
        return params, velocities, loss

    step = jax.jit(step, donate_argnums=(0, 1))
    for _ in range(3):
        params, velocities, loss = jax.block_until_ready(step(params, velocities))
    times = []
    for _ in range(args.steps):
        started = time.perf_counter()
        # Every result, the updated parameters too: the loss alone may be ready before them.
        params, velocities, loss = jax.block_until_ready(step(params, velocities))
        times.append(time.perf_counter() - started)
    median = statistics.median(times)
    print(f"{args.model}: batch {args.batch}, {args.threads} threads, "
          f"{median * 1e3:.3f} ms per step, {args.batch / median:.1f} images/s")
    if not bool(jnp.isfinite(loss)):
        sys.exit(f"the loss is {float(loss)}: the step is wrong")


if __name__ == "__main__":
    main()

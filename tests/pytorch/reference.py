#!/usr/bin/env python3
"""PyTorch references for the model zoo in models/*.net.

Each model of the zoo is written here again as a torch.nn.Module, by hand, layer for layer
(ReLU6 of MobileNet v2 as ReLU, like the .net file). For every model this counts

  params: sum of p.numel() over model.parameters() (batch-norm running statistics are buffers,
          not parameters, as in netc);
  macs:   multiply-accumulates of Conv2d and Linear layers only, for one example, measured with
          forward hooks: conv = output elements * in_channels / groups * kh * kw,
          linear = in_features * out_features;

and writes tests/pytorch/reference.json as {"model": {"params": N, "macs": M}, ...}, the model
name being the .net file's stem.

  python tests/pytorch/reference.py            # write reference.json, print a table
  python tests/pytorch/reference.py -v         # also per-top-level-layer counts
  python tests/pytorch/reference.py --check    # also compare with `netc summary --json`

Where torchvision is installed, resnet18, alexnet and mobilenet_v2 are also built from
torchvision.models and must give the same counts as the hand-written modules.
"""

import argparse
import json
import os
import subprocess
import sys

import torch
import torch.nn as nn

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def conv_bn_relu(cin, cout, k, stride=1, pad=0, groups=1):
    return [nn.Conv2d(cin, cout, k, stride, pad, groups=groups, bias=False),
            nn.BatchNorm2d(cout), nn.ReLU()]


# --- mlp, mnist_cnn ---------------------------------------------------------------------------

def mlp(classes=10):
    return nn.Sequential(nn.Flatten(), nn.Linear(784, 256), nn.ReLU(), nn.Linear(256, 128),
                         nn.ReLU(), nn.Linear(128, classes)), (1, 28, 28)


def mnist_cnn(classes=10):
    # Fleuret's course network, as its forward(): relu(max_pool(conv)) twice, then fc1, fc2.
    return nn.Sequential(
        nn.Conv2d(1, 32, 5), nn.MaxPool2d(3), nn.ReLU(),
        nn.Conv2d(32, 64, 5), nn.MaxPool2d(2), nn.ReLU(),
        nn.Flatten(), nn.Linear(256, 200), nn.ReLU(), nn.Linear(200, classes)), (1, 28, 28)


# --- vgg_small --------------------------------------------------------------------------------

def vgg_small(classes=10, size=224):
    layers, cin = [], 3
    for i, c in enumerate([64, 64, 128, 256, 512]):
        layers += conv_bn_relu(cin, c, 3, pad=1) + conv_bn_relu(c, c, 3, pad=1)
        layers.append(nn.MaxPool2d(2, 2) if i < 4 else nn.AvgPool2d(2, 2))
        cin = c
    feat = 512 * (size // 32) ** 2
    layers += [nn.Flatten(), nn.Linear(feat, 768), nn.ReLU(), nn.Dropout(0.35),
               nn.Linear(768, 768), nn.ReLU(), nn.Linear(768, classes)]
    return nn.Sequential(*layers), (3, size, size)


# --- googlenet, googlenet_small ---------------------------------------------------------------

class Inception(nn.Module):
    def __init__(self, cin, c1, c3r, c3, c5r, c5, pool_proj):
        super().__init__()
        self.b1 = nn.Sequential(nn.Conv2d(cin, c1, 1), nn.ReLU())
        self.b2 = nn.Sequential(nn.Conv2d(cin, c3r, 1), nn.ReLU(),
                                nn.Conv2d(c3r, c3, 3, padding=1), nn.ReLU())
        self.b3 = nn.Sequential(nn.Conv2d(cin, c5r, 1), nn.ReLU(),
                                nn.Conv2d(c5r, c5, 5, padding=2), nn.ReLU())
        self.b4 = nn.Sequential(nn.MaxPool2d(3, 1, 1), nn.Conv2d(cin, pool_proj, 1), nn.ReLU())
        self.out_channels = c1 + c3 + c5 + pool_proj

    def forward(self, x):
        return torch.cat([self.b1(x), self.b2(x), self.b3(x), self.b4(x)], 1)


INCEPTIONS = {
    "i3a": (64, 96, 128, 16, 32, 32), "i3b": (128, 128, 192, 32, 96, 64),
    "i4a": (192, 96, 208, 16, 48, 64), "i4b": (160, 112, 224, 24, 64, 64),
    "i4c": (128, 128, 256, 24, 64, 64), "i4d": (112, 144, 288, 32, 64, 64),
    "i4e": (256, 160, 320, 32, 128, 128),
    "i5a": (256, 160, 320, 32, 128, 128), "i5b": (384, 192, 384, 48, 128, 128),
}


def inception_body(cin, pool):
    """Inception 3a..5b with the 3x3/2 max-pools before 4a and 5a; returns (modules, channels)."""
    mods = []
    for name, cfg in INCEPTIONS.items():
        if name in ("i4a", "i5a"):
            mods.append(("pool" + str(int(name[1]) - 1), pool()))
        m = Inception(cin, *cfg)
        mods.append((name, m))
        cin = m.out_channels
    return mods, cin


def googlenet(classes=1000):
    # BVLC GoogLeNet (Caffe): pools round up (ceil_mode), LRN 5 / 1e-4 / 0.75 / k=1.
    from collections import OrderedDict
    pool = lambda: nn.MaxPool2d(3, 2, ceil_mode=True)
    lrn = lambda: nn.LocalResponseNorm(5, alpha=1e-4, beta=0.75, k=1.0)
    mods = [("conv1", nn.Conv2d(3, 64, 7, 2, 3)), ("relu1", nn.ReLU()), ("pool1", pool()),
            ("norm1", lrn()), ("conv2_reduce", nn.Conv2d(64, 64, 1)), ("relu2", nn.ReLU()),
            ("conv2", nn.Conv2d(64, 192, 3, padding=1)), ("relu3", nn.ReLU()),
            ("norm2", lrn()), ("pool2", pool())]
    body, c = inception_body(192, pool)
    mods += body
    mods += [("pool5", nn.AvgPool2d(7, 1)), ("flatten", nn.Flatten()),
             ("dropout", nn.Dropout(0.4)), ("fc", nn.Linear(c, classes))]
    return nn.Sequential(OrderedDict(mods)), (3, 224, 224)


def googlenet_small(classes=10, channels=3, size=32):
    from collections import OrderedDict
    mods = [("conv1", nn.Conv2d(channels, 192, 3, padding=1)), ("relu1", nn.ReLU())]
    body, c = inception_body(192, lambda: nn.MaxPool2d(3, 2, 1))
    mods += body
    mods += [("pool5", nn.AdaptiveAvgPool2d(1)), ("flatten", nn.Flatten()),
             ("dropout", nn.Dropout(0.4)), ("fc", nn.Linear(c, classes))]
    return nn.Sequential(OrderedDict(mods)), (channels, size, size)


# --- resnet18, resnet_small -------------------------------------------------------------------

class BasicBlock(nn.Module):
    def __init__(self, cin, cout, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU()
        self.downsample = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False),
                                            nn.BatchNorm2d(cout))

    def forward(self, x):
        y = self.bn2(self.conv2(self.relu(self.bn1(self.conv1(x)))))
        s = x if self.downsample is None else self.downsample(x)
        return self.relu(y + s)


def resnet(stem, widths, blocks, classes, shape):
    layers, cin = list(stem), widths[0]
    for i, (c, n) in enumerate(zip(widths, blocks)):
        for j in range(n):
            layers.append(BasicBlock(cin, c, 2 if (i > 0 and j == 0) else 1))
            cin = c
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(cin, classes)]
    return nn.Sequential(*layers), shape


def resnet18(classes=1000):
    stem = conv_bn_relu(3, 64, 7, 2, 3) + [nn.MaxPool2d(3, 2, 1)]
    return resnet(stem, [64, 128, 256, 512], [2, 2, 2, 2], classes, (3, 224, 224))


def resnet_small(classes=10, channels=3, size=32, n=3):
    # CIFAR ResNet-(6n+2) with projection (option B) shortcuts where the channels double.
    return resnet(conv_bn_relu(channels, 16, 3, 1, 1), [16, 32, 64], [n, n, n], classes,
                  (channels, size, size))


# --- mobilenet_v1, mobilenet_v2 ---------------------------------------------------------------

def mobilenet_v1(classes=1000):
    layers = conv_bn_relu(3, 32, 3, 2, 1)
    cfg = [(64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2)] + [(512, 1)] * 5 + \
          [(1024, 2), (1024, 1)]
    cin = 32
    for c, s in cfg:
        layers += conv_bn_relu(cin, cin, 3, s, 1, groups=cin) + conv_bn_relu(cin, c, 1)
        cin = c
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(1024, classes)]
    return nn.Sequential(*layers), (3, 224, 224)


class InvertedResidual(nn.Module):
    def __init__(self, cin, cout, t, stride):
        super().__init__()
        hidden = cin * t
        layers = conv_bn_relu(cin, hidden, 1) if t != 1 else []
        layers += conv_bn_relu(hidden, hidden, 3, stride, 1, groups=hidden)
        layers += [nn.Conv2d(hidden, cout, 1, bias=False), nn.BatchNorm2d(cout)]
        self.conv = nn.Sequential(*layers)
        self.use_res = stride == 1 and cin == cout

    def forward(self, x):
        return x + self.conv(x) if self.use_res else self.conv(x)


def mobilenet_v2(classes=1000):
    layers, cin = conv_bn_relu(3, 32, 3, 2, 1), 32
    for t, c, n, s in [(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2),
                       (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1)]:
        for i in range(n):
            layers.append(InvertedResidual(cin, c, t, s if i == 0 else 1))
            cin = c
    layers += conv_bn_relu(cin, 1280, 1)
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(0.2), nn.Linear(1280, classes)]
    return nn.Sequential(*layers), (3, 224, 224)


# --- alexnet ----------------------------------------------------------------------------------

def alexnet(classes=1000):
    # torchvision's AlexNet without its AdaptiveAvgPool2d((6, 6)), the identity at 224x224.
    return nn.Sequential(
        nn.Conv2d(3, 64, 11, 4, 2), nn.ReLU(), nn.MaxPool2d(3, 2),
        nn.Conv2d(64, 192, 5, padding=2), nn.ReLU(), nn.MaxPool2d(3, 2),
        nn.Conv2d(192, 384, 3, padding=1), nn.ReLU(),
        nn.Conv2d(384, 256, 3, padding=1), nn.ReLU(),
        nn.Conv2d(256, 256, 3, padding=1), nn.ReLU(), nn.MaxPool2d(3, 2),
        nn.Flatten(), nn.Dropout(0.5), nn.Linear(9216, 4096), nn.ReLU(),
        nn.Dropout(0.5), nn.Linear(4096, 4096), nn.ReLU(), nn.Linear(4096, classes)), (3, 224, 224)


MODELS = {f.__name__: f for f in [
    mlp, mnist_cnn, vgg_small, googlenet, googlenet_small, resnet18, resnet_small,
    mobilenet_v1, mobilenet_v2, alexnet]}


# --- counting ---------------------------------------------------------------------------------

def count(model, shape):
    """(params, macs, per-top-level-child [(name, params, macs)]) for one example of `shape`."""
    macs = {}

    def hook(mod, inp, out):
        if isinstance(mod, nn.Conv2d):
            kh, kw = mod.kernel_size
            n = out.numel() * (mod.in_channels // mod.groups) * kh * kw
        else:
            n = mod.in_features * mod.out_features * (out.numel() // out.shape[-1])
        macs[mod] = macs.get(mod, 0) + n

    handles = [m.register_forward_hook(hook) for m in model.modules()
               if isinstance(m, (nn.Conv2d, nn.Linear))]
    model.eval()
    with torch.no_grad():
        out = model(torch.zeros(1, *shape))
    for h in handles:
        h.remove()
    assert out.shape[0] == 1 and out.dim() == 2, out.shape
    rows = []
    for name, child in model.named_children():
        p = sum(q.numel() for q in child.parameters())
        m = sum(macs.get(sub, 0) for sub in child.modules())
        rows.append((name, p, m))
    params = sum(p.numel() for p in model.parameters())
    return params, sum(macs.values()), rows


def torchvision_crosscheck(results):
    try:
        import torchvision.models as tvm
    except ImportError:
        print("torchvision not installed: no cross-check against torchvision.models")
        return True
    ok = True
    for name, build in [("resnet18", tvm.resnet18), ("alexnet", tvm.alexnet),
                        ("mobilenet_v2", tvm.mobilenet_v2)]:
        p, m, _ = count(build(weights=None), (3, 224, 224))
        same = (p, m) == (results[name]["params"], results[name]["macs"])
        ok &= same
        print(f"torchvision.models.{name}: params {p:,} macs {m:,} "
              f"{'== hand-written' if same else '!= hand-written MISMATCH'}")
    return ok


def netc_check(results, netc):
    ok = True
    for name, ref in results.items():
        path = os.path.join(ROOT, "models", name + ".net")
        out = subprocess.run([netc, "summary", path, "--json"], capture_output=True, text=True)
        if out.returncode != 0:
            print(f"{name}: netc failed:\n{out.stderr}")
            ok = False
            continue
        totals = json.loads(out.stdout)["totals"]
        same = totals["params"] == ref["params"] and totals["macs"] == ref["macs"]
        ok &= same
        print(f"{name:16} netc params {totals['params']:>12,} macs {totals['macs']:>15,}  "
              f"{'ok' if same else 'MISMATCH'}")
    return ok


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("-v", "--verbose", action="store_true", help="per-top-level-layer counts")
    ap.add_argument("--check", action="store_true", help="compare with `netc summary --json`")
    ap.add_argument("--netc", default=os.path.join(ROOT, "target", "debug", "netc"))
    ap.add_argument("-o", "--output", default=os.path.join(ROOT, "tests", "pytorch",
                                                           "reference.json"))
    args = ap.parse_args()

    torch.manual_seed(0)
    results = {}
    for name, build in MODELS.items():
        model, shape = build()
        params, macs, rows = count(model, shape)
        results[name] = {"params": params, "macs": macs}
        print(f"{name:16} torch params {params:>12,} macs {macs:>15,}")
        if args.verbose:
            for r in rows:
                if r[1] or r[2]:
                    print(f"    {r[0]:>14} {r[1]:>12,} {r[2]:>15,}")
    with open(args.output, "w") as f:
        json.dump(results, f, indent=2)
        f.write("\n")
    print(f"wrote {os.path.relpath(args.output, ROOT)}")

    ok = torchvision_crosscheck(results)
    if args.check:
        ok &= netc_check(results, args.netc)
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()

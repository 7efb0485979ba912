"""Which recipe takes CAS's classifier to convergence? A fresh `mnist_cnn` trained on 10,000 real training digits
(the digits `gan evaluate`'s cas_real uses) by `cnnlab.core.mnist.train_mnist_cnn`, its accuracy on the 10,000 real
test digits, per recipe, epochs and seed.

    python benchmarks/cas_recipe.py --data-root ../shared/data --recipes constant:0:3,onecycle:2:5,onecycle:2:6 \
        --seeds 0,1,2
"""
from __future__ import annotations

import argparse
import json
import time

import torch

from cnnlab.core.data import load_mnist
from cnnlab.core.mnist import train_mnist_cnn


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data-root", required=True)
    ap.add_argument("--recipes", default="constant:0:3,onecycle:2:6", help="SCHEDULE:SHIFT:EPOCHS, comma-separated")
    ap.add_argument("--seeds", default="0")
    ap.add_argument("-n", type=int, default=10000)
    args = ap.parse_args()
    X, y = load_mnist(args.data_root, train=True)
    Xt, yt = load_mnist(args.data_root, train=False)
    pick = torch.randperm(len(X), generator=torch.Generator().manual_seed(1))[:args.n]  # as gan evaluate's seed 0
    for recipe in args.recipes.split(","):
        schedule, shift, epochs = recipe.split(":")
        for seed in map(int, args.seeds.split(",")):
            t0 = time.perf_counter()
            _, acc = train_mnist_cnn(X[pick], y[pick], Xt, yt, epochs=int(epochs), seed=seed, schedule=schedule,
                                     shift=int(shift))
            print(json.dumps({"schedule": schedule, "shift": int(shift), "epochs": int(epochs), "seed": seed,
                              "test_accuracy": acc, "seconds": time.perf_counter() - t0,
                              "threads": torch.get_num_threads(), "date": time.strftime("%Y-%m-%d")}), flush=True)


if __name__ == "__main__":
    main()

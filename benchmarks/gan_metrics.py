"""Do the GAN metrics mean what they say? `gan evaluate`'s set-to-set metrics (in the shipped MNIST classifier's
128-d features, against real test digits) on three generators whose answer is known, at several sample sizes:

  real       held-out real digits (training digits): every metric at its same-distribution value
  shipped    the shipped cDCGAN
  dropped    the shipped cDCGAN drawing digit d mod 5 when asked for d (digits 5-9 dropped)

and FD's small-sample floor (two disjoint sets of real test digits, when there are enough).

    python benchmarks/gan_metrics.py --data-root ../shared/data --sizes 1000,2000,5000,10000
    python benchmarks/gan_metrics.py --data-root ../shared/data --sizes 20000,30000 --reference train --kid-only 20 \
        --generators real,shipped
"""
from __future__ import annotations

import argparse
import json
import platform
import time

import torch

from cnnlab.core.data import load_mnist
from cnnlab.core.models import load_model
from cnnlab.gan.evaluation import features
from cnnlab.gan.metrics import feature_metrics, frechet, kid
from cnnlab.gan.sampling import generate, load_generator


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data-root", required=True)
    ap.add_argument("--sizes", default="1000,2000,5000,10000")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--reference", choices=("test", "train"), default="test",
                    help="train: the reference is training digits (60,000, for sizes past the 10,000 test digits), "
                         "'real' the next training digits")
    ap.add_argument("--kid-only", type=int, metavar="SUBSETS", default=None,
                    help="only KID, over this many subsets (large sizes: the kernel matrices grow as n²)")
    ap.add_argument("--generators", default="real,shipped,dropped")
    args = ap.parse_args()
    judge, (G, gan) = load_model("mnist_cnn"), load_generator()
    Xt, _ = load_mnist(args.data_root, train=False)
    Xtr, _ = load_mnist(args.data_root, train=True)

    def feats(x: torch.Tensor) -> torch.Tensor:
        return features(x.float() / 255 if x.dtype == torch.uint8 else x, judge, "pre_logits")

    test_order = torch.randperm(len(Xt), generator=torch.Generator().manual_seed(args.seed))
    train_order = torch.randperm(len(Xtr), generator=torch.Generator().manual_seed(args.seed))
    rows = []
    for n in map(int, args.sizes.split(",")):
        test = feats(Xt[test_order[:n]] if args.reference == "test" else Xtr[train_order[n:2 * n]])
        labels = torch.arange(n) % 10
        sets = {"real": feats(Xtr[train_order[:n]]),
                "shipped": feats(torch.cat([generate(G, gan, y, args.seed + i) for i, y in enumerate(labels.split(500))])),
                "dropped": feats(torch.cat([generate(G, gan, y % 5, args.seed + i)
                                            for i, y in enumerate(labels.split(500))]))}
        floor = None if args.kid_only else (frechet(test, feats(Xt[test_order[n:2 * n]])) if 2 * n <= len(Xt) and args.reference == "test"
                 else None)
        for name, f in sets.items():
            if name not in args.generators.split(","):
                continue
            t0 = time.perf_counter()
            if args.kid_only:
                mean, sd = kid(test, f, subsets=args.kid_only, seed=args.seed)
                print(json.dumps({"n": n, "generator": name, "kid": mean, "kid_std": sd, "subsets": args.kid_only,
                                  "reference": args.reference, "seconds": time.perf_counter() - t0}), flush=True)
                continue
            row = {"n": n, "generator": name, **feature_metrics(test, f, args.seed), "fd_floor": floor,
                   "seconds": time.perf_counter() - t0}
            rows.append(row)
            print(json.dumps(row), flush=True)
    print("| n | generator | FD | KID ± sd | KID − 2 sd > 0 | precision | recall | density | coverage |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['n']} | {r['generator']} | {r['fd']:.2f} | {r['kid']:.4f} ± {r['kid_std']:.4f} | "
              f"{'yes' if r['kid'] - 2 * r['kid_std'] > 0 else 'no'} | {r['precision']:.3f} | {r['recall']:.3f} | "
              f"{r['density']:.3f} | {r['coverage']:.3f} |")
    print(json.dumps({"date": time.strftime("%Y-%m-%d"), "cpu": platform.processor() or platform.machine(),
                      "threads": torch.get_num_threads(), "rows": rows}))


if __name__ == "__main__":
    main()

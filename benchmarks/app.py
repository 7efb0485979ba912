"""App benchmarks (results go to docs/benchmarks.md): the app runs as `cnnlab app` in its own process, driven by
gradio_client like a script or a page would.

(a) latency after warm-up, median of --n calls per endpoint (Lite0, photos of their own sizes);
(b) 4 concurrent clients for --seconds: requests served, errors, and the app process's RSS every 100 requests; the
    growth is measured over the 200 requests after the first 200 (the warm-up: allocator arenas and caches for the
    photos' sizes fill there) and from there to the end.

    python benchmarks/app.py --images ../shared/data/imagenet/foolbox20 [--n 10] [--seconds 120]
"""
from __future__ import annotations

import argparse
import json
import os
import random
import socket
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def start(port: int) -> subprocess.Popen:
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "cnnlab", "app", "--port", str(port)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(600):
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return proc
        time.sleep(0.1)
    raise RuntimeError("the app did not start")


def timed(fn, n: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    from gradio_client import Client, handle_file

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", required=True)
    ap.add_argument("--n", type=int, default=10)
    ap.add_argument("--seconds", type=float, default=120)
    ap.add_argument("--port", type=int, default=7871)
    args = ap.parse_args()
    photos = sorted(Path(args.images).glob("*.jpg"))
    proc = start(args.port)
    try:
        url = f"http://127.0.0.1:{args.port}/"
        c = Client(url, verbose=False)
        photo = handle_file(str(photos[0]))
        m = "efficientnet_lite0"
        lat = {
            "classify": timed(lambda: c.predict(photo, m, api_name="/classify"), args.n),
            "saliency vanilla": timed(lambda: c.predict(photo, m, ["vanilla"], False, api_name="/saliency"), args.n),
            "saliency gradcam": timed(lambda: c.predict(photo, m, ["gradcam"], False, api_name="/saliency"), args.n),
            "fool minimal": timed(lambda: c.predict(handle_file(str(random.choice(photos))), m, "tarantula", "minimal",
                                                    8, api_name="/fool"), args.n),
            "generate 64 digits": timed(lambda: c.predict("all", 64, 0, 1, 0.0, api_name="/generate"), args.n),
        }
        lat["classify + vanilla saliency"] = lat["classify"] + lat["saliency vanilla"]
        print(json.dumps(lat, indent=2), flush=True)
        out = {"latency_median_s": lat, "load": _load(url, photos, args.seconds, proc.pid)}
        print(json.dumps(out, indent=2))
    finally:
        proc.terminate()
        proc.wait()


def _load(url: str, photos: list[Path], seconds: float, pid: int) -> dict:
    """4 clients, each calling endpoints in turn until `seconds` are over."""
    from gradio_client import Client, handle_file

    calls = [lambda c: c.predict(handle_file(str(random.choice(photos))), "efficientnet_lite0", api_name="/classify"),
             lambda c: c.predict(handle_file(str(random.choice(photos))), "efficientnet_lite0", ["vanilla"], False,
                                 api_name="/saliency"),
             lambda c: c.predict("all", 64, random.randrange(100), 1, 0.0, api_name="/generate")]
    counts, errors, rss = [0], [], {"after_warm_up_mb": rss_mb(pid)}
    lock = threading.Lock()
    end = time.time() + seconds

    def worker(k: int) -> None:
        client = Client(url, verbose=False)
        i = k
        while time.time() < end:
            try:
                calls[i % len(calls)](client)
            except Exception as exc:  # noqa: BLE001 — counted, not fatal
                errors.append(repr(exc)[:200])
            i += 1
            with lock:
                counts[0] += 1
                if counts[0] % 100 == 0:
                    rss[f"after_{counts[0]}_requests_mb"] = rss_mb(pid)

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    rss["at_end_mb"] = rss_mb(pid)
    steady = [rss[f"after_{k}_requests_mb"] for k in range(200, counts[0] + 1, 100)]
    return {"clients": 4, "seconds": seconds, "requests": counts[0], "errors": len(errors),
            "error_samples": errors[:3], "rss": rss,
            "growth_over_requests_200_to_400_mb": steady[2] - steady[0] if len(steady) > 2 else None,
            "growth_from_request_200_to_end_mb": rss["at_end_mb"] - steady[0] if steady else None}


if __name__ == "__main__":
    main()

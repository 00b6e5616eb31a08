"""A bounded load test of `cnnzoo serve` on 127.0.0.1: what dynamic batching buys, and
what the server costs against the bare network, for each config named.

    nice -n 10 .venv/bin/python scripts/bench_serve.py [--configs lenet5 fashion-best] \\
        [--clients 32] [--seconds 10] [--max-batch 64] [--max-wait-ms 5] [--threads 1] \\
        [--backend torch|onnxruntime] [--network process|thread] [--workers 1]

For each config, with Fashion-MNIST test images as PNG bodies of POST /predict:
- saturated: `--clients` clients, each sending its next request when the last is
  answered, for `--seconds`: requests/s, and the batch sizes the server formed (its
  /metadata counters);
- the same against the server started with --max-batch 1;
- latency: requests sent at half the saturated rate on a fixed schedule (open loop, so
  a slow answer cannot hold back the next request), each timed from sending to answer:
  p50 and p99, against the target of 3 x the batch-1 forward time + --max-wait-ms;
  and the server's own p50 and p99 for the same requests (its Server-Timing header);
- the ceiling: the bare network's images/s (normalisation, forward pass, softmax, as
  the batcher runs it, without HTTP or decoding) at the batch sizes the server formed,
  measured in this process after the servers stopped; and the saturated rate's share
  of it.
The clients run in this process, on the same CPU as the server: on a small machine
they take a share of it that a real deployment's clients would not. So they are as
cheap as a Python client gets: one asyncio loop writing requests and reading answers
on kept-alive connections (as a client library's pool keeps them), a fraction of the
CPU per request of http.client in threads with a new connection each.
"""

from __future__ import annotations

import argparse
import gzip
import http.client
import importlib.util
import io
import os
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from cnnzoo.serve.loadtest import latencies, saturate  # noqa: E402

FASHION = Path("/usr/share/datasets/fashion-mnist")


def png_bodies(count: int) -> list[bytes]:
    from PIL import Image

    with gzip.open(FASHION / "t10k-images-idx3-ubyte.gz") as handle:
        images = np.frombuffer(handle.read(), np.uint8, offset=16).reshape(-1, 28, 28)
    bodies = []
    for image in images[:count]:
        buffer = io.BytesIO()
        Image.fromarray(image).save(buffer, format="PNG")
        bodies.append(buffer.getvalue())
    return bodies


class Server:
    def __init__(self, config: str, max_batch: int, args: argparse.Namespace) -> None:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        command = [sys.executable, "-m", "cnnzoo", "serve", config, "--pretrained", "--port",
                   str(self.port), "--max-batch", str(max_batch), "--max-wait-ms",
                   str(args.max_wait_ms), "--backend", args.backend, "--max-queue", "4096",
                   "--network", args.network, "--workers", str(args.workers)]
        if args.threads:
            command += ["--threads", str(args.threads)]
        self.process = subprocess.Popen(command, stdout=subprocess.DEVNULL,
                                        stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 180
        while not self.ready():
            if self.process.poll() is not None or time.monotonic() > deadline:
                sys.exit(f"the server for {config} did not start: {' '.join(command)}")
            time.sleep(0.2)

    def ready(self) -> bool:
        try:
            return self.get("/health")[0] == 200
        except OSError:
            return False

    def get(self, path: str) -> tuple[int, bytes]:
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
        try:
            connection.request("GET", path)
            response = connection.getresponse()
            return response.status, response.read()
        finally:
            connection.close()

    def batch_sizes(self) -> Counter:
        import json

        sizes = json.loads(self.get("/metadata")[1])["counters"]["batch_sizes"]
        return Counter({int(size): count for size, count in sizes.items()})

    def stop(self) -> None:
        self.process.send_signal(signal.SIGTERM)
        self.process.wait(60)


def forward_seconds(predictor, size: int, bodies: list[bytes], budget: float = 0.3) -> float:
    """The best time of one batch of `size` through the bare network."""
    import torch

    from cnnzoo.tools.predict.predictor import NamedBytes, decode

    pixels = torch.from_numpy(np.stack([decode(NamedBytes(bodies[i % len(bodies)], "x"),
                                               predictor.volume) for i in range(size)]))
    predictor.scores(pixels)
    best, spent = float("inf"), 0.0
    while spent < budget:
        start = time.perf_counter()
        predictor.scores(pixels)
        elapsed = time.perf_counter() - start
        best, spent = min(best, elapsed), spent + elapsed
    return best


def slowest_parts(timed) -> dict[str, float]:
    """Where the slowest 1% of the latency requests spent their time, on average: outside
    the app (HTTP, the socket, the client), and the parts of its Server-Timing."""
    order = np.argsort(timed.measured)[-max(1, len(timed.measured) // 100):]
    rows = []
    for i in order:
        parts = timed.server[i]
        inside = {name: parts.get(name, 0.0) for name in ("read", "queue", "forward")}
        rows.append({"outside the app": timed.measured[i] - parts["app"], **inside,
                     "answer": parts["app"] - sum(inside.values())})
    return {name: float(np.mean([row[name] for row in rows])) for name in rows[0]}


def measure(config: str, bodies: list[bytes], args: argparse.Namespace) -> dict:
    server = Server(config, args.max_batch, args)
    try:
        saturate(server.port, bodies, args.clients, 1.0)  # warm the connections and caches
        before = server.batch_sizes()
        saturated = saturate(server.port, bodies, args.clients, args.seconds)
        formed = server.batch_sizes() - before
        timed = latencies(server.port, bodies, saturated / 2, args.seconds)
    finally:
        server.stop()
    single = Server(config, 1, args)
    try:
        saturate(single.port, bodies, args.clients, 1.0)
        unbatched = saturate(single.port, bodies, args.clients, args.seconds)
    finally:
        single.stop()
    from cnnzoo.serve.onecall import one_call
    from cnnzoo.tools.predict.predictor import Predictor

    predictor = Predictor(config, pretrained=True, backend=args.backend, device="cpu")
    one_call(predictor)  # the network as the server runs it
    spent = sum(count * forward_seconds(predictor, size, bodies)
                for size, count in formed.items())
    ceiling = sum(size * count for size, count in formed.items()) / spent
    batch1 = forward_seconds(predictor, 1, bodies)
    mean_batch = sum(s * c for s, c in formed.items()) / sum(formed.values())
    return {"config": config, "saturated": saturated, "unbatched": unbatched,
            "ceiling": ceiling, "mean_batch": mean_batch, "largest": max(formed),
            "p50": float(np.percentile(timed.measured, 50)),
            "p99": float(np.percentile(timed.measured, 99)),
            "server_p50": float(np.percentile([s["app"] for s in timed.server], 50)),
            "server_p99": float(np.percentile([s["app"] for s in timed.server], 99)),
            "slowest": slowest_parts(timed),
            "target": 3 * batch1 + args.max_wait_ms / 1000, "batch1": batch1,
            "late": float(np.percentile(timed.late, 99))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--configs", nargs="+", default=["lenet5", "fashion-best"])
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--max-batch", type=int, default=64)
    parser.add_argument("--max-wait-ms", type=float, default=5.0)
    parser.add_argument("--threads", type=int, default=None,
                        help="the network's threads in the server and for the ceiling")
    parser.add_argument("--backend", default="torch", choices=["torch", "onnxruntime"])
    parser.add_argument("--network", default="process", choices=["process", "thread"],
                        help="where the server runs the forward pass (cnnzoo serve --network)")
    parser.add_argument("--workers", type=int, default=1, help="server processes (cnnzoo "
                        "serve --workers; the batch sizes are one worker's)")
    args = parser.parse_args()
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    bodies = png_bodies(256)
    try:
        rows = [measure(config, bodies, args) for config in args.configs]
    except RuntimeError as exc:  # a refused request: the measurement means nothing
        sys.exit(str(exc))
    print(f"{args.clients} clients, {args.seconds:g} s per rate, --max-batch "
          f"{args.max_batch}, --max-wait-ms {args.max_wait_ms:g}, --backend {args.backend}, "
          f"--network {args.network}, --workers {args.workers}, "
          f"threads {args.threads or 'torch default'}, {os.cpu_count()} CPUs, HTTP parsed by "
          f"{'httptools' if importlib.util.find_spec('httptools') else 'h11'}\n")
    print("| config | saturated req/s | ceiling img/s (at the batches formed) | share | "
          "--max-batch 1 req/s | mean (largest) batch | p50 / p99 at half rate | "
          "p99 target | the server's own p50 / p99 |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['config']} | {r['saturated']:,.0f} | {r['ceiling']:,.0f} | "
              f"{r['saturated'] / r['ceiling']:.0%} | {r['unbatched']:,.0f} | "
              f"{r['mean_batch']:.1f} ({r['largest']}) | {r['p50'] * 1e3:.1f} / "
              f"{r['p99'] * 1e3:.1f} ms | {r['target'] * 1e3:.1f} ms | "
              f"{r['server_p50'] * 1e3:.1f} / {r['server_p99'] * 1e3:.1f} ms |")
    print("\nThe slowest 1% of the requests at half rate, on average, in ms: "
          "outside the app (HTTP parsing, the socket, the clients) / reading the body "
          "until queued / queued until its batch ran / the forward pass / the answer after "
          "it (the parts of the server's Server-Timing header)\n")
    for r in rows:
        print(f"- {r['config']}: " + " / ".join(f"{value * 1e3:.2f}"
                                               for value in r["slowest"].values()))
    print("\nThe clients sent their requests at most "
          + ", ".join(f"{r['late'] * 1e3:.1f} ms ({r['config']})" for r in rows)
          + " after they were due (p99; the latencies are timed from sending). The server's"
          " own time is its Server-Timing header: from the app receiving a request to its"
          " answer starting, without HTTP parsing or waiting in the socket.")


if __name__ == "__main__":
    main()

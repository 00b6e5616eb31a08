"""Latency of two `cnnzoo serve` set-ups side by side: the network in its own process
(`--network process`) against it in a thread of the server's (`--network thread`), on
the same machine in the same minutes.

    .venv/bin/python scripts/bench_serve_pair.py [--config lenet5] [--turns 8] \\
        [--seconds 5] [--rate R] [--backend torch|onnxruntime] [--threads 1]

Both servers start first and stay up (an idle server sleeps); then each turn runs the
open-loop latency test of scripts/bench_serve.py (requests due at a fixed rate, each
timed from sending to its answer) against one server and then the other, the order
swapped every turn, so that the machine's slow moments fall on both alike. The rate is
half the first server's saturated rate unless --rate names one. Printed: each turn's
p50 / p99 and the server's own p99 (its Server-Timing), then per server the median over
the turns, the turns whose p99 met the target (3 x the batch-1 forward time +
--max-wait-ms) and the ratio of the medians; over all turns, and over the quiet ones,
where the clients themselves were never held up more than 5 ms (a stall of the whole
machine shows there first: the clients are the least loaded process on it).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))
sys.path.insert(0, str(REPO / "scripts"))

from bench_serve import Server, forward_seconds, png_bodies  # noqa: E402

from cnnzoo.serve.loadtest import latencies, saturate  # noqa: E402

PLACES = ("process", "thread")
QUIET_LATENESS = 0.005  # clients' p99 lateness of a turn on a quiet machine: 1-2 ms


def turn(server: Server, bodies: list[bytes], rate: float, seconds: float) -> tuple[float, ...]:
    """(p50, p99, the server's own p99, the clients' p99 lateness), in seconds."""
    timed = latencies(server.port, bodies, rate, seconds)
    app = [parts["app"] for parts in timed.server]
    return (float(np.percentile(timed.measured, 50)), float(np.percentile(timed.measured, 99)),
            float(np.percentile(app, 99)), float(np.percentile(timed.late, 99)))


def target_seconds(args: argparse.Namespace, bodies: list[bytes]) -> float:
    """3 x the bare network's batch-1 time + --max-wait-ms, as bench_serve.py's target."""
    from cnnzoo.serve.onecall import one_call
    from cnnzoo.tools.predict.predictor import Predictor

    predictor = Predictor(args.config, pretrained=True, backend=args.backend, device="cpu")
    one_call(predictor)
    return 3 * forward_seconds(predictor, 1, bodies) + args.max_wait_ms / 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default="lenet5")
    parser.add_argument("--turns", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--rate", type=float, default=None, help="requests/s (default: half "
                        "the first server's saturated rate)")
    parser.add_argument("--max-wait-ms", type=float, default=5.0)
    parser.add_argument("--backend", default="torch", choices=["torch", "onnxruntime"])
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    bodies = png_bodies(256)
    servers: dict[str, Server] = {}
    try:
        for place in PLACES:
            servers[place] = Server(args.config, 64, argparse.Namespace(
                max_wait_ms=args.max_wait_ms, backend=args.backend, threads=args.threads,
                network=place, workers=1))
            saturate(servers[place].port, bodies, 32, 1.0)  # warm the connections and caches
        rate = args.rate or saturate(servers[PLACES[0]].port, bodies, 32, args.seconds) / 2
        print(f"{args.config}, --backend {args.backend}, {args.threads} network thread(s), "
              f"{rate:,.0f} requests/s for {args.seconds:g} s a turn\n")
        rows: dict[str, list[tuple[float, ...]]] = {place: [] for place in PLACES}
        for k in range(args.turns):
            for place in PLACES if k % 2 == 0 else PLACES[::-1]:
                rows[place].append(turn(servers[place], bodies, rate, args.seconds))
                p50, p99, own, late = (value * 1e3 for value in rows[place][-1])
                print(f"{time.strftime('%H:%M:%S')} --network {place:7s}  p50 / p99 {p50:5.1f} "
                      f"/ {p99:5.1f} ms  the server's own p99 {own:5.1f} ms  "
                      f"(clients late {late:.1f} ms)", flush=True)
    finally:
        for server in servers.values():
            server.stop()
    target = target_seconds(args, bodies)
    print(f"\np99 target: {target * 1e3:.1f} ms\n")
    # A turn whose clients were held up (their requests sent late) is one where the
    # machine stalled every process on it; its tail says nothing of either server.
    quiet = [k for k in range(args.turns)
             if all(rows[place][k][3] <= QUIET_LATENESS for place in PLACES)]
    for label, turns in (("all turns", range(args.turns)), ("quiet turns", quiet)):
        if not turns:
            print(f"{label}: none (every turn's clients were over "
                  f"{QUIET_LATENESS * 1e3:.0f} ms late)")
            continue
        medians = {place: np.median(np.array([rows[place][k] for k in turns]), axis=0)
                   for place in PLACES}
        for place in PLACES:
            met = sum(rows[place][k][1] <= target for k in turns)
            p50, p99, own = (medians[place][i] * 1e3 for i in range(3))
            print(f"{label}, --network {place}: median over {len(turns)} p50 / p99 "
                  f"{p50:.1f} / {p99:.1f} ms, the server's own p99 {own:.1f} ms; p99 within "
                  f"target in {met} of {len(turns)}")
        ratio = medians["thread"][1] / medians["process"][1]
        print(f"{label}: median p99, thread / process: {ratio:.2f}\n")


if __name__ == "__main__":
    main()

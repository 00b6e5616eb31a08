"""For every bundled config with shipped weights: the recorded test accuracy and what
`cnnzoo eval NAME --pretrained` gives, the largest output difference of each export
format from the PyTorch module, and onnxruntime vs PyTorch inference speed on the CPU
(images/s at batch 1 and 256). Prints a markdown table for docs/zoo.md.

    .venv/bin/python scripts/bench_export.py [--only NAME ...] [--seconds 2]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch


def images_per_second(run: Callable[[torch.Tensor], object], batch: torch.Tensor,
                      seconds: float) -> float:
    """Images/s of `run` on `batch`, after one warm-up call, over at least `seconds`."""
    run(batch)
    count, start = 0, time.perf_counter()
    while True:
        run(batch)
        count += 1
        elapsed = time.perf_counter() - start
        if elapsed >= seconds:
            return count * len(batch) / elapsed


def onnx_session(path: Path, threads: int) -> Callable[[torch.Tensor], object]:
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    session = onnxruntime.InferenceSession(str(path), options,
                                           providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return lambda x: session.run(None, {name: x.numpy()})


def measure(name: str, seconds: float) -> dict[str, object]:
    from cnnzoo.runs import rundir
    from cnnzoo.runs.load import load_run_model
    from cnnzoo.runs.pretrained import unpack
    from cnnzoo.runs.shipped import bundled_record
    from cnnzoo.tools.evaluate import evaluate_run
    from cnnzoo.tools.export import FORMATS, export_run

    record = bundled_record(name)
    assert record is not None
    run_dir = unpack(name)
    result, _ = evaluate_run(run_dir, "test", None, "cpu")
    row: dict[str, object] = {"name": name, "recorded": record["test_accuracy"],
                              "eval": result.accuracy}
    model = load_run_model(rundir.open_run(run_dir), torch.device("cpu"))
    model.to(memory_format=torch.contiguous_format)
    with tempfile.TemporaryDirectory() as scratch:
        for fmt in FORMATS:
            out = Path(scratch) / f"{name}.{fmt}"
            try:
                row[fmt] = export_run(run_dir, fmt, out, say=lambda _: None).max_difference
            except Exception as exc:  # a format that cannot hold the network: say why
                row[fmt] = f"not exported: {str(exc).split(':')[0]}"
        onnx_path = Path(scratch) / f"{name}.onnx"
        if onnx_path.exists():
            session = onnx_session(onnx_path, torch.get_num_threads())
            volume = model.plan.input
            for batch_size in (1, 256):
                x = torch.randn(batch_size, volume.depth, volume.height, volume.width)
                with torch.no_grad():
                    row[f"torch@{batch_size}"] = images_per_second(model, x, seconds)
                row[f"ort@{batch_size}"] = images_per_second(session, x, seconds)
    return row


def markdown(rows: list[dict[str, object]]) -> str:
    def cell(value: object, kind: str) -> str:
        if isinstance(value, str) or value is None:
            return value or "-"
        return {"acc": f"{value:.2%}", "diff": f"{value:.2g}", "speed": f"{value:,.0f}"}[kind]

    lines = ["| config | recorded | eval --pretrained | onnx | torchscript | exported | "
             "PyTorch b=1 | onnxruntime b=1 | PyTorch b=256 | onnxruntime b=256 |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for row in rows:
        lines.append("| " + " | ".join([
            str(row["name"]), cell(row["recorded"], "acc"), cell(row["eval"], "acc"),
            *(cell(row.get(f), "diff") for f in ("onnx", "torchscript", "exported")),
            *(cell(row.get(k), "speed") for k in ("torch@1", "ort@1", "torch@256", "ort@256")),
        ]) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    from cnnzoo.runs.shipped import bundled_with_weights

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", nargs="+", default=[], metavar="NAME")
    parser.add_argument("--seconds", type=float, default=2.0,
                        help="how long each speed is measured")
    parser.add_argument("--threads", type=int, default=None,
                        help="CPU threads for PyTorch and onnxruntime alike (default: "
                        "PyTorch's)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    names = args.only or bundled_with_weights()
    rows = []
    for name in names:
        print(f"--- {name}", file=sys.stderr, flush=True)
        rows.append(measure(name, args.seconds))
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    print(markdown(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""What each part of a recipe buys, measured on the validation split.

    # train the config once as it is and once per variant (each a set of --set
    # overrides), the same seed and time budget, and table what each changed
    python scripts/ablate.py train fashion-best --set data.val_split=0.1 \\
        --set train.time_budget=900 \\
        --variant "no random erasing: data.augment.erase=0" \\
        --variant "mixup and CutMix: data.augment.mixup=0.2 data.augment.cutmix=1.0" \\
        --runs runs/ablate

    # one trained run, evaluated again: its averaged weights (train.ema) against the
    # raw weights of its last step, under every kind of test-time augmentation
    cnnzoo train --config fashion-best --set data.val_split=0.1 --out runs/best-val
    python scripts/ablate.py views runs/best-val

Every training is the complete `cnnzoo train` command in a fresh process. Variants are
compared on the validation split, which chooses the recipe; the test accuracy is shown
beside it but is not what a choice should be made on, so every run needs a validation
split: a config without one (fashion-best trains on all 60,000 images) is refused
before anything trains; add `--set data.val_split=0.1`. `views` needs a run with a
validation split and its state.pt (the raw weights are there, the average in
model.safetensors). A run directory that already holds a finished run of the same
command is reused (`--reuse`), so that an interrupted ablation picks up where it was.
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))


def check_validated(config: str, common: list[str],
                    variants: list[tuple[str, list[str]]]) -> None:
    """Exit (2) with one message when the config, or any variant of it, has no
    validation split or does not load: the comparison is made on that split, and an
    hour of training must not end in a table that cannot be drawn."""
    from cnnzoo.config.experiment import load_config
    from cnnzoo.errors import CnnzooError

    for label, sets in [("as configured", []), *variants]:
        try:
            loaded = load_config(config, [*common, *sets])
        except CnnzooError as exc:
            print(f"error: {label}: {exc}", file=sys.stderr)
            sys.exit(2)
        if not loaded.data.val_split:
            print(f"error: {label}: {config} has no validation split (data.val_split is 0), "
                  "and variants are compared on it; add --set data.val_split=0.1",
                  file=sys.stderr)
            sys.exit(2)


def train_variants(config: str, common: list[str], variants: list[tuple[str, list[str]]],
                   runs_dir: Path, reuse: bool, device: str) -> list[dict]:
    rows = []
    for label, sets in [("as configured", []), *variants]:
        out = runs_dir / slug(label)
        command = [sys.executable, "-m", "cnnzoo", "train", "--config", config, "--device",
                   device, "--quiet", "--out", str(out)]
        for text in [*common, *sets]:
            command += ["--set", text]
        shown = shlex.join(["cnnzoo", *command[3:]])
        results_file, record = out / "results.json", out / "ablation.json"
        made = json.loads(record.read_text()) if record.exists() else {}
        if reuse and results_file.exists() and made.get("command") == shown:
            results, wall = json.loads(results_file.read_text()), made["wall_seconds"]
            print(f"reused {out}", flush=True)
        else:
            print(f"{label}: {shown}", flush=True)
            start = time.perf_counter()
            proc = subprocess.run(command, capture_output=True, text=True)
            wall = time.perf_counter() - start
            if proc.returncode != 0:
                sys.exit(f"{shown} failed ({proc.returncode}):\n{proc.stderr.strip()}")
            results = json.loads(results_file.read_text())
            # Beside the run, so that --reuse knows which command made it. The time is kept
            # unrounded: rounded here and again in the table, it could print another number.
            record.write_text(json.dumps({"command": shown, "wall_seconds": wall}))
        rows.append({"variant": label, "sets": " ".join(sets) or "-",
                     "val": results["val_accuracy"], "test": results["test_accuracy"],
                     "epochs": results["epochs_run"], "wall": wall})
    return rows


def slug(label: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in label.lower()).strip("-") or "base"


def view_table(run_dir: Path, data_root: str | None) -> list[dict]:
    """Val accuracy of the run's saved (averaged) and raw weights under each TTA mode."""
    import torch

    from cnnzoo.config.experiment import TTA_VIEWS
    from cnnzoo.data.pipeline import load_dataset
    from cnnzoo.runs import rundir
    from cnnzoo.runs.checkpoint import load_state
    from cnnzoo.runs.load import load_run_model, run_transform, trained_precision
    from cnnzoo.training.evaluation import evaluate

    run = rundir.open_run(run_dir)
    device = torch.device("cpu")
    model = load_run_model(run, device)
    weights = {"saved (model.safetensors)": {k: v.clone() for k, v in
                                              model.state_dict().items()}}
    state_file = run_dir / rundir.STATE
    if state_file.exists() and "ema" in load_state(state_file):
        weights["raw, last step (state.pt)"] = load_state(state_file)["model"]
    data = load_dataset(run.config.data, model.plan.input, model.plan.output.depth,
                        seed=run.config.train.seed, data_root=data_root, splits=("train", "val"))
    if data.val is None:
        print(f"error: {run_dir} has no validation split (data.val_split is 0); train it "
              "with --set data.val_split=0.1", file=sys.stderr)
        sys.exit(2)
    split = data.val.to(device)
    transform = run_transform(run, device)
    precision = trained_precision(run, device)
    rows = []
    for name, tensors in weights.items():
        model.load_state_dict(tensors)
        for tta in TTA_VIEWS:
            start = time.perf_counter()
            result = evaluate(model, split.eval_batches(run.config.train.eval_batch_size),
                              transform, len(run.classes), device, precision, tta)
            rows.append({"weights": name, "tta": tta, "val": result.accuracy,
                         "loss": result.loss, "seconds": time.perf_counter() - start})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="what", required=True)
    t = sub.add_parser("train", help="train a config and its variants, and table them")
    t.add_argument("config")
    t.add_argument("--set", dest="common", action="append", default=[], metavar="KEY=VALUE",
                   help="an override for every run, the base included (repeatable)")
    t.add_argument("--variant", action="append", default=[], metavar="'LABEL: K=V K=V'",
                   help="a variant: a label, a colon, its overrides (repeatable)")
    t.add_argument("--runs", type=Path, default=Path("runs/ablate"))
    t.add_argument("--device", default="cpu")
    t.add_argument("--reuse", action="store_true",
                   help="keep a finished run of the same command instead of training again")
    v = sub.add_parser("views", help="a run's averaged and raw weights under each TTA mode")
    v.add_argument("run", type=Path)
    v.add_argument("--data-root")
    args = parser.parse_args()

    if args.what == "views":
        from cnnzoo.errors import CnnzooError
        try:
            rows = view_table(args.run, args.data_root)
        except CnnzooError as exc:  # no such run, weights that do not fit: one line
            print(f"error: {exc}", file=sys.stderr)
            sys.exit(2)
        base = next(r["val"] for r in rows if r["tta"] == "none")
        print(f"\n{args.run}: validation split\n")
        print("| weights | tta | val accuracy | vs first row | val loss | seconds |")
        print("|---|---|---:|---:|---:|---:|")
        for r in rows:
            print(f"| {r['weights']} | {r['tta']} | {r['val']:.2%} | "
                  f"{(r['val'] - base) * 100:+.2f} | {r['loss']:.4f} | {r['seconds']:.1f} |")
        return

    variants = []
    for text in args.variant:
        label, _, sets = text.partition(":")
        if not sets.strip():
            parser.error(f"--variant {text!r}: write 'LABEL: key=value key=value'")
        variants.append((label.strip(), sets.split()))
    check_validated(args.config, args.common, variants)
    rows = train_variants(args.config, args.common, variants, args.runs, args.reuse,
                          args.device)
    base = rows[0]
    print(f"\n{args.config}, each run with {' '.join(args.common) or 'no common overrides'}\n")
    print("| variant | overrides | val accuracy | vs as configured | test accuracy | epochs "
          "| whole command |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['variant']} | `{r['sets']}` | {r['val']:.2%} | "
              f"{(r['val'] - base['val']) * 100:+.2f} | {r['test']:.2%} | {r['epochs']} | "
              f"{r['wall']:.0f} s |")


if __name__ == "__main__":
    main()

"""One measurement of the zoo: parse the options, then for every config adapt it, time
a step, choose the epochs, train it with `cnnzoo train` in a subprocess, record the
result and rewrite the report after each. `scripts/zoo_results.py` calls `main`.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cnnzoo.config.experiment import load_config
from cnnzoo.utils.format import format_seconds
from cnnzoo.zoo import measure as zoo_measure
from cnnzoo.zoo.report import plot_records, render_markdown

DESCRIPTION = ("Measure the zoo: train every bundled config that fits Fashion-MNIST on this "
               "machine, within a time budget per config, and write down what happened.")


@dataclass
class Options:
    only: list[str]
    budget_minutes: float
    epochs: int | None
    sets: list[str]
    device: str
    runs: Path
    results: Path
    configs_dir: Path
    update_configs: bool
    fresh: bool
    reuse: bool
    data_root: str | None
    threads: int | None
    argv: list[str] = field(default_factory=list)


def parse_args(argv: list[str], root: Path) -> Options:
    """The options; `root` is the checkout whose docs/ and configs/ are the defaults."""
    parser = argparse.ArgumentParser(description=DESCRIPTION.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", nargs="+", default=[], metavar="NAME",
                        help="train these configs only")
    parser.add_argument("--budget-minutes", type=float, default=10.0,
                        help="training time per config; epochs are capped to fit (0: no cap)")
    parser.add_argument("--epochs", type=int, default=None,
                        help="train this many epochs instead of each config's own")
    parser.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                        help="an override for every config, as cnnzoo train --set (repeatable)")
    parser.add_argument("--device", default="cpu", help="cpu (the default), cuda, ...")
    parser.add_argument("--runs", type=Path, default=None,
                        help="where the run directories go (default runs/zoo-TIME)")
    parser.add_argument("--results", type=Path, default=root / "docs" / "results.md",
                        help="the markdown report; its plot is written next to it")
    parser.add_argument("--configs-dir", type=Path, default=root / "configs",
                        help="the configs to train; results.json and the comment lines are "
                        "written here")
    parser.add_argument("--no-update-configs", dest="update_configs", action="store_false",
                        help="write neither results.json nor the configs' comment lines")
    parser.add_argument("--fresh", action="store_true",
                        help="forget the records of earlier runs in results.json")
    parser.add_argument("--reuse", action="store_true",
                        help="record a finished run in --runs of the same config instead of "
                        "training it again (after an interrupted measurement)")
    parser.add_argument("--data-root", default=None, help="look for the dataset here first")
    parser.add_argument("--threads", type=int, default=None,
                        help="CPU threads per training (OMP_NUM_THREADS); on a machine busy "
                        "with other work, 1 avoids threads waiting for each other")
    args = parser.parse_args(argv)
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    return Options(args.only, args.budget_minutes, args.epochs, args.sets, args.device,
                   args.runs or Path("runs") / f"zoo-{stamp}", args.results, args.configs_dir,
                   args.update_configs, args.fresh, args.reuse, args.data_root, args.threads, argv)


def _config_arg(path: Path) -> str:
    """A bundled config by name (as users type it), any other by path."""
    from cnnzoo.config.bundled import bundled_configs

    return path.stem if bundled_configs().get(path.stem) == path.resolve() else str(path)


def write_outputs(options: Options, records: dict[str, dict[str, Any]], configs: dict[str, Path],
                  skipped: dict[str, str], machine: dict[str, Any], budget: float | None,
                  trained: list[str]) -> None:
    """docs/results.md, its plot, configs/results.json and the comment lines of the
    configs in `trained`, from what is measured so far."""
    from cnnzoo.config.bundled import write_measured
    from cnnzoo.utils.files import atomic_write_text

    results_path = options.results
    results_path.parent.mkdir(parents=True, exist_ok=True)
    plot = plot_records(records, results_path.parent / zoo_measure.PLOT)
    budget_text = (f"{format_seconds(budget)} of estimated training time per config; epochs "
                   "are capped to fit" if budget else "none; every config trains its own epochs")
    # The runs folder of this machine means nothing to a reader: the header shows the
    # default place, runs/zoo, so that the command can be pasted.
    argv = ["runs/zoo" if before == "--runs" else word
            for before, word in zip(["", *options.argv], options.argv, strict=False)]
    invocation = shlex.join([".venv/bin/python", "scripts/zoo_results.py", *argv])
    markdown = render_markdown(records, list(configs), skipped, machine, budget_text, invocation,
                               plot.name if plot else None)
    atomic_write_text(results_path, markdown)
    if options.update_configs:
        write_measured(records, options.configs_dir)
        for name in trained:
            path = configs[name]
            atomic_write_text(path, zoo_measure.rewrite_measured(path.read_text(),
                                                     zoo_measure.measured_lines(records[name])))


@dataclass
class Measurement:
    """What one measurement has found so far; written out after every config."""

    options: Options
    configs: dict[str, Path]
    machine: dict[str, Any]
    budget: float | None
    records: dict[str, dict[str, Any]]
    env: dict[str, str]
    prefix: list[str]  # what the recorded command is run with (OMP_NUM_THREADS=...)
    skipped: dict[str, str] = field(default_factory=dict)
    trained: list[str] = field(default_factory=list)
    failed: bool = False

    def write(self) -> None:
        write_outputs(self.options, self.records, self.configs, self.skipped, self.machine,
                      self.budget, self.trained)


def main(argv: list[str] | None = None, root: Path | None = None) -> int:
    """Measure the configs the options name; 0 when every training succeeded."""
    from cnnzoo.config.bundled import read_measured

    options = parse_args(sys.argv[1:] if argv is None else argv, root or Path.cwd())
    configs = {p.stem: p.resolve() for p in sorted(options.configs_dir.glob("*.yaml"))}
    unknown = [n for n in options.only if n not in configs]
    if unknown:
        print(f"error: no config {', '.join(unknown)} in {options.configs_dir}", file=sys.stderr)
        return 2
    env = dict(os.environ)
    prefix: list[str] = []
    if options.threads:
        import torch

        torch.set_num_threads(options.threads)
        env["OMP_NUM_THREADS"] = str(options.threads)
        prefix = [f"OMP_NUM_THREADS={options.threads}"]
    measurement = Measurement(
        options, configs, zoo_measure.machine_info(),
        options.budget_minutes * 60 if options.budget_minutes > 0 else None,
        {} if options.fresh else dict(read_measured(options.configs_dir)), env, prefix)
    for name in options.only or list(configs):
        measure_config(measurement, name)
    measurement.write()
    print(f"wrote {options.results}" + (f", {options.configs_dir / 'results.json'} and the "
                                        f"'{zoo_measure.MEASURED}' lines of "
                                        f"{len(measurement.trained)} configs"
                                        if options.update_configs else ""))
    return 1 if measurement.failed else 0


def measure_config(m: Measurement, name: str) -> None:
    """Adapt, time and train one config (or reuse its finished run) and record it."""
    options = m.options
    user_sets = [*options.sets, *([f"train.epochs={options.epochs}"] if options.epochs else [])]
    try:
        adapted = zoo_measure.adapted_config(m.configs[name], user_sets)
        config = adapted.config
        step = zoo_measure.measure_step_seconds(config, adapted.plan, options.device)
        epochs = zoo_measure.choose_epochs(config.train.epochs, zoo_measure.Workload.of(config),
                                           step, m.budget)
    except zoo_measure.Skip as exc:
        m.skipped[name] = str(exc)
        print(f"--- {name}: not measured: {exc}", flush=True)
        return
    sets = adapted.sets
    if epochs != config.train.epochs:
        sets = [s for s in sets if not s.startswith("train.epochs=")]
        sets.append(f"train.epochs={epochs}")
    out = options.runs / name
    command = zoo_measure.train_command(_config_arg(m.configs[name]), sets, out, options.device,
                                        options.data_root)
    date = dt.date.today().isoformat()
    if options.reuse and zoo_measure.finished_run(out, load_config(m.configs[name], sets)):
        results = json.loads((out / "results.json").read_text())
        wall = float(results["wall_seconds"])  # measured inside the command
        run_date = str(results.get("finished", date))[:10]
        print(f"--- {name}: reusing the finished run in {out}", flush=True)
    else:
        estimate = zoo_measure.Workload.of(config).seconds(epochs, step)
        trained = _train(m, name, out, command, epochs, estimate)
        if trained is None:
            return
        results, wall, run_date = (*trained, date)
    info = json.loads((out / "run.json").read_text())
    m.records[name] = zoo_measure.make_record(results, info, command, adapted.adaptation, wall,
                                              m.machine, run_date, m.prefix)
    if options.update_configs:
        from cnnzoo.runs.publish import pack_for_zoo

        m.records[name]["pretrained"] = pack_for_zoo(out, adapted.adaptation,
                                                     options.configs_dir, m.records[name])
    m.trained.append(name)
    m.write()


def _train(m: Measurement, name: str, out: Path, command: list[str], epochs: int,
           estimate: float) -> tuple[dict[str, Any], float] | None:
    """Run `cnnzoo train` in a subprocess: (results, wall seconds), None if it failed."""
    if out.exists() and m.options.reuse:
        import shutil

        shutil.rmtree(out)  # an unfinished or different run: train it again
    print(f"--- {name}: {zoo_measure.epochs_text(epochs)}, about {format_seconds(estimate)}: "
          f"cnnzoo {shlex.join(command)}", flush=True)
    tick = time.perf_counter()
    code = subprocess.call([sys.executable, "-m", "cnnzoo", *command], env=m.env)
    wall = time.perf_counter() - tick
    if code != 0 or not (out / "results.json").exists():
        m.skipped[name] = f"training failed (exit code {code}); see {out}"
        print(f"--- {name}: training failed (exit code {code})", flush=True)
        m.failed = True
        return None
    return json.loads((out / "results.json").read_text()), wall

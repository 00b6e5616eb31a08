"""One measurement of the zoo: parse the options, then for every config adapt it, time
a step, choose the epochs, train it with `cnnzoo train` in a subprocess (one run, or
with --seeds one `--seeds` parent), record the result and rewrite the report after
each. `scripts/zoo_results.py` calls `main`. Two paths train nothing: --add-seeds
adds the seeds of finished parents to existing records, and --report-only rewrites
the report from configs/results.json.
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

from cnnzoo.config.experiment import ExperimentConfig, load_config
from cnnzoo.utils.format import format_seconds
from cnnzoo.zoo import measure as zoo_measure
from cnnzoo.zoo import seeded
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
    seeds: int | None = None  # train seeds 0 .. N-1 of every config (None: one run)
    add_seeds: list[str] = field(default_factory=list)  # NAME=PARENT: seeds to add, untrained
    report_only: bool = False
    argv: list[str] = field(default_factory=list)

    @property
    def trains(self) -> bool:
        return not (self.report_only or self.add_seeds)


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
    parser.add_argument("--seeds", type=int, default=None, metavar="N",
                        help="train seeds 0 .. N-1 of every config (cnnzoo train --seeds N, "
                        "one parent per config in --runs); the record is seed 0's run, with "
                        "every seed's accuracy and times and their sd")
    parser.add_argument("--add-seeds", action="append", default=[], metavar="NAME=PARENT",
                        help="train nothing: add the seeds of the finished parent PARENT "
                        "(cnnzoo train --seeds) to the record of NAME, whose own run stays "
                        "its first seed (repeatable)")
    parser.add_argument("--report-only", action="store_true",
                        help="train nothing: rewrite the report and its plot from "
                        "results.json")
    args = parser.parse_args(argv)
    if args.seeds is not None and args.seeds < 1:
        parser.error(f"--seeds takes a count of 1 or more. Received: {args.seeds}")
    if (args.report_only or args.add_seeds) and (args.only or args.seeds or args.fresh):
        parser.error("--report-only and --add-seeds train nothing: leave out --only, --seeds "
                     "and --fresh")
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    return Options(args.only, args.budget_minutes, args.epochs, args.sets, args.device,
                   args.runs or Path("runs") / f"zoo-{stamp}", args.results, args.configs_dir,
                   args.update_configs, args.fresh, args.reuse, args.data_root, args.threads,
                   args.seeds, args.add_seeds, args.report_only, argv)


def _config_arg(path: Path) -> str:
    """A bundled config by name (as users type it), any other by path."""
    from cnnzoo.config.bundled import bundled_configs

    return path.stem if bundled_configs().get(path.stem) == path.resolve() else str(path)


def shown_argv(argv: list[str]) -> list[str]:
    """The script's arguments as the report shows them: the runs folder of this machine
    means nothing to a reader, so --runs shows the default place, runs/zoo, and a parent
    of --add-seeds its folder there, so that the command can be pasted."""
    shown = []
    for before, word in zip(["", *argv], argv, strict=False):
        if before == "--runs":
            word = "runs/zoo"
        elif before == "--add-seeds" and "=" in word:
            name, parent = word.split("=", 1)
            word = f"{name}=runs/zoo/{Path(parent).name}"
        shown.append(word)
    return shown


def write_outputs(options: Options, records: dict[str, dict[str, Any]], configs: dict[str, Path],
                  skipped: dict[str, str], machine: dict[str, Any] | None, budget: float | None,
                  trained: list[str]) -> None:
    """docs/results.md, its plot, configs/results.json and the comment lines of the
    configs in `trained`, from what is measured so far (`machine` None: nothing was
    trained by this invocation)."""
    from cnnzoo.config.bundled import write_measured
    from cnnzoo.utils.files import atomic_write_text

    results_path = options.results
    results_path.parent.mkdir(parents=True, exist_ok=True)
    plot = plot_records(records, results_path.parent / zoo_measure.PLOT)
    budget_text = (f"{format_seconds(budget)} of estimated training time per config; epochs "
                   "are capped to fit" if budget else
                   "no cap from --budget-minutes; every config trains its own epochs, or what "
                   "its `train.time_budget` allows")
    invocation = shlex.join([".venv/bin/python", "scripts/zoo_results.py",
                             *shown_argv(options.argv)])
    markdown = render_markdown(records, list(configs), skipped, machine, budget_text, invocation,
                               plot.name if plot else None)
    atomic_write_text(results_path, markdown)
    if options.update_configs and not options.report_only:
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
    machine: dict[str, Any] | None  # None when this invocation trains nothing
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
        options, configs, zoo_measure.machine_info() if options.trains else None,
        options.budget_minutes * 60 if options.budget_minutes > 0 else None,
        {} if options.fresh else dict(read_measured(options.configs_dir)), env, prefix)
    if not options.trains:
        code = add_parents(measurement)
        if code:
            return code
    for name in (options.only or list(configs)) if options.trains else []:
        measure_config(measurement, name)
    measurement.write()
    print(f"wrote {options.results}" + (f", {options.configs_dir / 'results.json'} and the "
                                        f"'{zoo_measure.MEASURED}' lines of "
                                        f"{len(measurement.trained)} configs"
                                        if options.update_configs and not options.report_only
                                        else ""))
    return 1 if measurement.failed else 0


def add_parents(m: Measurement) -> int:
    """--add-seeds: the seeds of each finished parent added to its config's record,
    without training; 2 (and nothing written) when one cannot be added."""
    from cnnzoo.errors import CnnzooError
    from cnnzoo.runs.seeds import open_seed_parent

    for spec in m.options.add_seeds:
        name, _, parent = spec.partition("=")
        record = m.records.get(name)
        try:
            if not parent or name not in m.configs:
                raise CnnzooError(f"--add-seeds takes NAME=PARENT with NAME one of the configs "
                                  f"in {m.options.configs_dir}. Received: {spec!r}")
            if record is None:
                raise CnnzooError(f"{name} has no record to add seeds to; measure it first")
            path = Path(parent)
            command = seeded.parent_command(record["command"], path,
                                            open_seed_parent(path).seeds)
            m.records[name] = seeded.add_seeds(record, m.configs[name], path, command)
        except CnnzooError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        m.trained.append(name)
        print(f"--- {name}: added the seeds of {parent}", flush=True)
    return 0


@dataclass(frozen=True)
class Finished:
    """A finished training of one config, as its record needs it."""

    run: Path  # the run the record is of: the run, or a parent's first seed
    results: dict[str, Any]  # its results.json
    wall: float  # its wall time in seconds
    date: str
    seed: int | None = None  # for a parent: the run's seed
    summary: dict[str, Any] | None = None  # for a parent: its seeds' summary


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
                                        options.data_root, options.seeds)
    trains = load_config(m.configs[name], sets)
    estimate = zoo_measure.Workload.of(config).seconds(epochs, step)
    what = f"{zoo_measure.epochs_text(epochs)}, about {format_seconds(estimate)}"
    done = (_single_run(m, name, out, command, trains, what) if options.seeds is None
            else _seeds_run(m, name, out, command, trains, what))
    if done is None:
        return
    info = json.loads((done.run / "run.json").read_text())
    record = zoo_measure.make_record(done.results, info, command, adapted.adaptation, done.wall,
                                     m.machine or {}, done.date, m.prefix)
    if done.summary is not None and done.seed is not None:
        record = seeded.with_seeds(record, done.seed, seeded.seed_entries(done.summary))
    if options.update_configs:
        from cnnzoo.runs.publish import pack_for_zoo

        record["pretrained"] = pack_for_zoo(done.run, adapted.adaptation, options.configs_dir,
                                            record)
    m.records[name] = record
    m.trained.append(name)
    m.write()


def _single_run(m: Measurement, name: str, out: Path, command: list[str],
                config: ExperimentConfig, what: str) -> Finished | None:
    """One `cnnzoo train` run of a config into `out`, or with --reuse the finished run of
    the same config there."""
    if m.options.reuse and zoo_measure.finished_run(out, config):
        results = json.loads((out / "results.json").read_text())
        print(f"--- {name}: reusing the finished run in {out}", flush=True)
        # measured inside the command
        return Finished(out, results, float(results["wall_seconds"]), _finished_date(results))
    if out.exists() and m.options.reuse:
        import shutil

        shutil.rmtree(out)  # an unfinished or different run: train it again
    print(f"--- {name}: {what}: cnnzoo {shlex.join(command)}", flush=True)
    wall = _train(m, name, out, command, out / "results.json")
    if wall is None:
        return None
    results = json.loads((out / "results.json").read_text())
    return Finished(out, results, wall, dt.date.today().isoformat())


def _seeds_run(m: Measurement, name: str, out: Path, command: list[str],
               config: ExperimentConfig, what: str) -> Finished | None:
    """`cnnzoo train --seeds N` of a config into the parent `out`; with --reuse, a
    finished parent of the same config and seeds there is taken as it is and an
    interrupted one resumed (`cnnzoo train --resume PARENT`)."""
    from cnnzoo.runs.seeds import SEED_RESULTS, is_seed_parent

    options = m.options
    seeds = list(range(options.seeds or 1))
    state = seeded.parent_state(out, config, seeds) if options.reuse else "other"
    if state == "finished":
        print(f"--- {name}: reusing the finished seeds in {out}", flush=True)
    else:
        if state == "interrupted":
            seeded.clear_unstarted(out)
            args = ["train", "--resume", str(out), "--device", options.device,
                    *(["--data-root", options.data_root] if options.data_root else [])]
            print(f"--- {name}: resuming the seeds in {out}: cnnzoo {shlex.join(args)}",
                  flush=True)
        else:
            if out.exists() and options.reuse:
                if not is_seed_parent(out):
                    return _refuse(m, name, f"{out} holds no seeds parent (a single run of an "
                                   "earlier measurement?); it is left alone: measure the seeds "
                                   "into another --runs folder")
                import shutil

                shutil.rmtree(out)  # a parent of another config or other seeds
            args = command
            print(f"--- {name}: {len(seeds)} seeds of {what} each: cnnzoo {shlex.join(args)}",
                  flush=True)
        if _train(m, name, out, args, out / SEED_RESULTS) is None:
            return None
    seed, run = seeded.first_seed_run(out)
    results = json.loads((run / "results.json").read_text())
    # Each seed's wall time is measured inside the command, as its summary gives it.
    date = _finished_date(results) if state == "finished" else dt.date.today().isoformat()
    return Finished(run, results, float(results["wall_seconds"]), date, seed,
                    seeded.read_summary(out))


def _refuse(m: Measurement, name: str, reason: str) -> None:
    m.skipped[name] = reason
    print(f"--- {name}: not measured: {reason}", flush=True)
    m.failed = True


def _finished_date(results: dict[str, Any]) -> str:
    return str(results.get("finished", dt.date.today().isoformat()))[:10]


def _train(m: Measurement, name: str, out: Path, command: list[str],
           written: Path) -> float | None:
    """Run `cnnzoo COMMAND` in a subprocess: its wall seconds, None if it failed (or did
    not write `written`)."""
    tick = time.perf_counter()
    code = subprocess.call([sys.executable, "-m", "cnnzoo", *command], env=m.env)
    wall = time.perf_counter() - tick
    if code != 0 or not written.exists():
        m.skipped[name] = f"training failed (exit code {code}); see {out}"
        print(f"--- {name}: training failed (exit code {code})", flush=True)
        m.failed = True
        return None
    return wall

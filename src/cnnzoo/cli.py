"""The `cnnzoo` command line. The only place that turns errors into exit codes."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from cnnzoo.errors import CnnzooError

if TYPE_CHECKING:
    from cnnzoo.config import ExperimentConfig

app = typer.Typer(
    name="cnnzoo",
    help="Convolutional networks described in YAML: build, summarise, train, evaluate.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)

USER_ERROR = 2

ConfigOption = Annotated[
    str,
    typer.Option(
        "--config", "-c", help="an experiment file, or the name of a bundled config (cnnzoo zoo)"
    ),
]
SetOption = Annotated[
    list[str] | None,
    typer.Option("--set", "-s", help="override a key, e.g. --set train.epochs=3 (repeatable)"),
]


@app.command()
def summary(
    config: ConfigOption,
    as_json: Annotated[bool, typer.Option("--json", help="print JSON instead of a table")] = False,
    overrides: SetOption = None,
) -> None:
    """Layer by layer: output volume W x H x D, params, mult-adds, receptive field, and
    what a fully connected layer between the same volumes would cost."""
    from cnnzoo.config import load_config
    from cnnzoo.plan import plan_experiment
    from cnnzoo.summary import format_summary, summary_dict

    plan = plan_experiment(load_config(config, overrides or []))
    if as_json:
        print(json.dumps(summary_dict(plan), indent=2))
    else:
        print(format_summary(plan))


@app.command()
def layers(
    as_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False,
) -> None:
    """Every layer type with its parameters and defaults."""
    from cnnzoo.registry import layer_table
    from cnnzoo.summary import format_table

    table = layer_table()
    if as_json:
        print(json.dumps(table, indent=2))
        return
    for entry in table:
        primary = next((p["name"] for p in entry["params"] if p["primary"]), None)
        shorthand = f"   (- {entry['type']}: N sets {primary})" if primary else ""
        print(f"{entry['type']}: {entry['doc']}{shorthand}")
        rows = [
            (f"  {p['name']}", p["kind"], _default_text(p["default"]), p["doc"])
            for p in entry["params"]
        ]
        if rows:
            print(format_table(("", "", "", ""), rows, set()).split("\n", 1)[1])
        print()


def _default_text(value: object) -> str:
    if value is None:
        return "none"
    if isinstance(value, bool):
        return str(value).lower()
    return str(value)


@app.command()
def schema(
    out: Annotated[Path | None, typer.Option("--out", "-o", help="write to this file")] = None,
) -> None:
    """JSON Schema of the experiment file, for editors (yaml-language-server)."""
    from cnnzoo.schema import experiment_schema

    text = json.dumps(experiment_schema(), indent=2) + "\n"
    if out is None:
        print(text, end="")
    else:
        from cnnzoo.files import atomic_write_text

        atomic_write_text(out, text)


@app.command()
def train(
    config: Annotated[
        str | None,
        typer.Option("--config", "-c", help="an experiment file or a bundled config's name"),
    ] = None,
    overrides: SetOption = None,
    out: Annotated[
        Path | None, typer.Option("--out", "-o", help="run directory (default runs/NAME-TIME)")
    ] = None,
    data_root: Annotated[
        str | None, typer.Option("--data-root", help="look for datasets here first")
    ] = None,
    device: Annotated[
        str | None, typer.Option("--device", help="auto, cpu, cuda, cuda:N or mps")
    ] = None,
    resume: Annotated[
        Path | None, typer.Option("--resume", help="continue the run in this directory")
    ] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="no progress output")] = False,
    nproc: Annotated[
        int | None,
        typer.Option("--nproc", min=1, help="train in N processes on this machine, one per GPU "
                     "or sharing the CPU cores (starts torchrun; batch_size stays the global "
                     "batch)"),
    ] = None,
) -> None:
    """Train a network on its dataset and save the run (weights, metrics, results)."""
    from cnnzoo.config import load_config
    from cnnzoo.training.runload import load_config_for_resume
    from cnnzoo.training.trainer import fit

    if device is not None:
        from cnnzoo.config import TrainConfig  # validate like the YAML key
        from cnnzoo.params import Where

        TrainConfig.__dataclass_fields__["device"].metadata["kind"].parse(
            device, "--device", Where("--device", ())
        )
    if resume is not None:
        cfg = (load_config(config, overrides or []) if config is not None
               else load_config_for_resume(resume, overrides or []))
    elif config is None:
        raise CnnzooError("give --config FILE (or a bundled name) or --resume RUN_DIR")
    else:
        cfg = load_config(config, overrides or [])
    if nproc is not None and nproc > 1:
        code = _launch_processes(nproc, cfg, config, overrides or [], out, data_root, device,
                                 resume, quiet)
        if code:
            raise typer.Exit(code)
        return
    fit(cfg, out=out, data_root=data_root, device=device, resume=resume, show_progress=not quiet)


def _launch_processes(nproc: int, cfg: ExperimentConfig, config: str | None,
                      overrides: list[str], out: Path | None, data_root: str | None,
                      device: str | None, resume: Path | None, quiet: bool) -> int:
    """`cnnzoo train` with the same options in `nproc` processes under torchrun. The run
    directory is chosen here, so that a restarted worker finds the run it belongs to, and
    what can be refused is refused here, once, rather than by every process."""
    from cnnzoo import runs
    from cnnzoo.distributed import Distributed, check_nproc, launch
    from cnnzoo.training.devices import resolve_device
    from cnnzoo.training.stopping import worker_rank

    if worker_rank() is not None:
        raise CnnzooError("--nproc starts torchrun itself; under torchrun leave it out")
    torch_device = resolve_device(device or cfg.train.device)
    check_nproc(nproc, torch_device)
    Distributed(world=nproc).check_sync_batchnorm(cfg, torch_device)
    args = ["train"]
    if config is not None:
        args += ["--config", config]
    for text in overrides:
        args += ["--set", text]
    if resume is not None:
        args += ["--resume", str(resume)]
    else:
        out = out if out is not None else runs.default_run_dir(cfg.name)
        runs.check_new_run_dir(out)
        args += ["--out", str(out)]
    if data_root is not None:
        args += ["--data-root", data_root]
    if device is not None:
        args += ["--device", device]
    if quiet:
        args.append("--quiet")
    return launch(nproc, args)


RunDir = Annotated[Path, typer.Argument(help="a run directory made by cnnzoo train")]


@app.command(name="eval")
def eval_(
    run_dir: RunDir,
    split: Annotated[str, typer.Option("--split", help="test, val or train")] = "test",
    as_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False,
    data_root: Annotated[str | None, typer.Option("--data-root")] = None,
    device: Annotated[str, typer.Option("--device")] = "auto",
) -> None:
    """Accuracy, loss, per-class accuracy and confusion matrix of a trained run."""
    from cnnzoo.training.runload import evaluate_run

    if split not in ("test", "val", "train"):
        raise CnnzooError(f"--split must be test, val or train, got '{split}'")
    result, classes = evaluate_run(run_dir, split, data_root, device)
    per_class = result.per_class()
    if as_json:
        print(json.dumps({
            "run": str(run_dir), "split": split, "accuracy": result.accuracy,
            "loss": result.loss, "samples": result.samples,
            "per_class": dict(zip(classes, per_class, strict=True)),
            "classes": classes, "confusion": result.confusion.tolist(),
        }, indent=2))
        return
    from cnnzoo.summary import format_table

    print(f"{run_dir} on {split}: accuracy {result.accuracy:.2%}, loss {result.loss:.4f}, "
          f"{result.samples:,} images\n")
    rows = [(name, f"{acc:.2%}", f"{int(result.confusion[i].sum()):,}")
            for i, (name, acc) in enumerate(zip(classes, per_class, strict=True))]
    print(format_table(("class", "accuracy", "images"), rows, {"accuracy", "images"}))
    print("\nconfusion matrix (rows: true class, columns: predicted)")
    header = ("", *(str(i) for i in range(len(classes))))
    matrix = [(f"{i} {name}", *(str(int(v)) for v in result.confusion[i]))
              for i, name in enumerate(classes)]
    print(format_table(header, matrix, set(header[1:])))


@app.command()
def predict(
    run_dir: RunDir,
    images: Annotated[list[Path], typer.Argument(help="image files (png, jpg, ...)")],
    top: Annotated[int, typer.Option("--top", "-k", min=1, help="classes to show")] = 3,
    as_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False,
    device: Annotated[str, typer.Option("--device")] = "auto",
) -> None:
    """The most likely classes, with probabilities, for image files."""
    from cnnzoo.predict import predict_files

    results = predict_files(run_dir, images, top, device)
    if as_json:
        print(json.dumps(results, indent=2))
        return
    for item in results:
        guesses = ", ".join(f"{g['class']} {g['probability']:.1%}" for g in item["top"])
        print(f"{item['image']}: {guesses}")


@app.command(name="filter")
def filter_(
    image: Annotated[Path, typer.Argument(help="a grayscale or RGB image file (png, jpg, ...)")],
    out: Annotated[Path, typer.Option("--out", "-o", help="the PNG grid to write")],
    kernels: Annotated[
        list[str] | None,
        typer.Option("--kernel", "-k", help="a fixed kernel: identity, box_blur, gaussian_blur, "
                     "sharpen, edge, sobel_x, sobel_y, emboss (repeatable)"),
    ] = None,
    padding_mode: Annotated[
        str, typer.Option("--padding-mode", help="zeros, reflect, replicate, circular, symmetric")
    ] = "reflect",
    impl: Annotated[str, typer.Option("--impl", help="direct, fft or auto")] = "direct",
) -> None:
    """Apply classic kernels (blur, sharpen, edges) to an image through cnnzoo's conv layer;
    write the original and one panel per kernel as one PNG."""
    from cnnzoo.filter import write_filter_grid

    grid = write_filter_grid(image, kernels or [], out, padding_mode, impl)
    count = len(kernels or [])
    print(f"wrote {out} ({grid.width}x{grid.height}: the original and {count} "
          f"kernel{'' if count == 1 else 's'})")


@app.command()
def zoo(
    as_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False,
) -> None:
    """The bundled configs (use their names with --config): dataset, input, params,
    mult-adds and the test accuracy measured by scripts/zoo_results.py."""
    from cnnzoo.zoo import format_zoo, zoo_entries, zoo_json

    entries = zoo_entries()
    if as_json:
        print(json.dumps(zoo_json(entries), indent=2))
    else:
        print(format_zoo(entries))


@app.command()
def compare(
    run_dirs: Annotated[
        list[str],
        typer.Argument(help="run directories, or quoted patterns such as 'runs/*'"),
    ],
    plot: Annotated[
        Path, typer.Option("--plot", help="where to draw test accuracy against parameters")
    ] = Path("compare.png"),
    no_plot: Annotated[bool, typer.Option("--no-plot", help="draw nothing")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False,
) -> None:
    """Trained runs side by side: params, mult-adds, test accuracy, train time, device;
    and a PNG of test accuracy against parameters (log scale)."""
    from cnnzoo.compare import compare_runs, comparison_json, format_comparison, plot_comparison

    rows = compare_runs(run_dirs)
    drawn = None if no_plot else plot_comparison(rows, plot)
    if as_json:
        print(json.dumps({"runs": comparison_json(rows), "plot": str(drawn) if drawn else None},
                         indent=2))
        return
    print(format_comparison(rows))
    if drawn is not None:
        print(f"\nplot: {drawn}")


@app.command()
def viz(
    run_dir: RunDir,
    image: Annotated[Path, typer.Option("--image", "-i", help="an image file (png, jpg, ...)")],
    out: Annotated[
        Path | None,
        typer.Option("--out", "-o", help="a .png (one picture) or a directory (one per layer); "
                     "default RUN_DIR/activations-IMAGE.png"),
    ] = None,
    device: Annotated[str, typer.Option("--device")] = "auto",
) -> None:
    """The activation volume of every conv, local and pool layer for one image, each a
    grid of its depth slices (W x H x D as D tiles)."""
    from cnnzoo.viz import visualize_run

    for path in visualize_run(run_dir, image, out, device):
        print(path)


def run(argv: list[str] | None = None) -> int:
    """Run the CLI on `argv` and return the exit code; user errors print one line."""
    from cnnzoo.training.stopping import Interrupted, worker_rank

    try:
        app(args=argv, prog_name="cnnzoo")
    except CnnzooError as exc:
        rank = worker_rank()
        print(f"{'' if not rank else f'[rank {rank}] '}error: {exc}", file=sys.stderr)
        return USER_ERROR
    except Interrupted as exc:
        if not worker_rank():  # every process stopped at the same step; one says so
            print(str(exc), file=sys.stderr)
        return exc.exit_code
    except SystemExit as exc:  # how Typer reports --help, usage errors and Exit
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return 0


def main() -> None:
    """The `cnnzoo` console script."""
    sys.exit(run())

"""The `cnnzoo` command line. The only place that turns errors into exit codes."""

from __future__ import annotations

import json
import sys
from enum import Enum
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
    add_completion=True,  # --install-completion, --show-completion
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)

USER_ERROR = 2


def complete_config(incomplete: str) -> list[str]:
    """Shell completion for --config: bundled config names, then YAML files and folders."""
    from cnnzoo.config import bundled_configs

    names = [name for name in bundled_configs() if name.startswith(incomplete)]
    folder, _, start = incomplete.rpartition("/")
    try:
        entries = sorted(Path(folder or ".").iterdir())
    except OSError:
        entries = []
    paths = [f"{folder + '/' if folder else ''}{p.name}{'/' if p.is_dir() else ''}"
             for p in entries if p.name.startswith(start) and not p.name.startswith(".")
             and (p.is_dir() or p.suffix in (".yaml", ".yml"))]
    return names + paths


def _version(value: bool) -> None:
    if value:
        from cnnzoo import __version__

        print(f"cnnzoo {__version__}")
        raise typer.Exit()


@app.callback()
def _options(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True,
                           help="print cnnzoo's version and exit")
    ] = False,
) -> None:
    """Convolutional networks described in YAML: build, summarise, train, evaluate."""


# Choices the parser checks and --help lists. Written out here, not imported, because
# `cnnzoo --help` must not import torch; tests/test_cli.py checks that they match the
# names the layers and the evaluation accept.
class EvalSplit(str, Enum):
    test = "test"
    val = "val"
    train = "train"


class PaddingMode(str, Enum):
    zeros = "zeros"
    reflect = "reflect"
    replicate = "replicate"
    circular = "circular"
    symmetric = "symmetric"


class FreqShape(str, Enum):
    gaussian = "gaussian"
    ideal = "ideal"
    butterworth = "butterworth"


class ConvImpl(str, Enum):
    direct = "direct"
    fft = "fft"
    auto = "auto"


class FixedKernel(str, Enum):
    identity = "identity"
    box_blur = "box_blur"
    gaussian_blur = "gaussian_blur"
    sharpen = "sharpen"
    edge = "edge"
    sobel_x = "sobel_x"
    sobel_y = "sobel_y"
    emboss = "emboss"


ConfigOption = Annotated[
    str,
    typer.Option(
        "--config", "-c", help="an experiment file, or the name of a bundled config (cnnzoo zoo)",
        autocompletion=complete_config,
    ),
]
DeviceOption = Annotated[
    str, typer.Option("--device", help="auto (cuda, then mps, then cpu), cpu, cuda, cuda:N or mps")
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


@app.command(name="config")
def config_(
    config: Annotated[
        str, typer.Argument(help="an experiment file, or the name of a bundled config",
                            autocompletion=complete_config)
    ],
    overrides: SetOption = None,
) -> None:
    """The fully resolved config as YAML, every default filled in: what `cnnzoo train`
    would use, and valid as a --config file itself."""
    from cnnzoo.config import load_config

    print(load_config(config, overrides or []).to_yaml().rstrip("\n"))


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
        typer.Option("--config", "-c", help="an experiment file or a bundled config's name",
                     autocompletion=complete_config),
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
    init_from: Annotated[
        str | None,
        typer.Option("--init-from", help="start from trained weights: a bundled config's "
                     "name (its pretrained weights), a run directory, a weights file or an "
                     "https://...#sha256=HEX URL; layers whose name and shape match are "
                     "loaded"),
    ] = None,
) -> None:
    """Train a network on its dataset and save the run (weights, metrics, results)."""
    from cnnzoo.config import load_config
    from cnnzoo.train import fit, load_config_for_resume

    if device is not None:
        _check_device(device)
    if init_from is not None and resume is not None:
        raise CnnzooError("--init-from starts a new run; --resume continues one from its own "
                          "weights: give one of them")
    if resume is not None:
        cfg = (load_config(config, overrides or []) if config is not None
               else load_config_for_resume(resume, overrides or []))
    elif config is None:
        raise CnnzooError("give --config FILE (or a bundled name) or --resume RUN_DIR")
    else:
        cfg = load_config(config, overrides or [])
    if nproc is not None and nproc > 1:
        code = _launch_processes(nproc, cfg, config, overrides or [], out, data_root, device,
                                 resume, quiet, init_from)
        if code:
            raise typer.Exit(code)
        return
    fit(cfg, out=out, data_root=data_root, device=device, resume=resume, show_progress=not quiet,
        init_from=init_from)


def _check_device(device: str) -> None:
    """--device checked like the YAML key train.device (auto, cpu, cuda, cuda:N, mps)."""
    from cnnzoo.config import TrainConfig
    from cnnzoo.params import Where

    TrainConfig.__dataclass_fields__["device"].metadata["kind"].parse(
        device, "--device", Where("--device", ())
    )


def _launch_processes(nproc: int, cfg: ExperimentConfig, config: str | None,
                      overrides: list[str], out: Path | None, data_root: str | None,
                      device: str | None, resume: Path | None, quiet: bool,
                      init_from: str | None = None) -> int:
    """`cnnzoo train` with the same options in `nproc` processes under torchrun. The run
    directory is chosen here, so that a restarted worker finds the run it belongs to, and
    what can be refused is refused here, once, rather than by every process."""
    from cnnzoo import runs
    from cnnzoo.distributed import Distributed, check_nproc, launch, worker_rank
    from cnnzoo.train import resolve_device

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
        from cnnzoo.runlock import refuse_live

        refuse_live(resume, "resume")
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
    if init_from is not None:
        args += ["--init-from", init_from]
    return launch(nproc, args)


RunSource = Annotated[
    str, typer.Argument(help="a run directory made by cnnzoo train; with --pretrained, a "
                        "bundled config's name, a packed .safetensors file or an "
                        "https://...#sha256=HEX URL")
]
PretrainedFlag = Annotated[
    bool, typer.Option("--pretrained", help="use the trained weights shipped with cnnzoo "
                       "for the config SOURCE (cnnzoo zoo lists them), or those of a packed "
                       "file or URL")
]


def _run_dir(source: str, pretrained: bool) -> Path:
    """The run directory to read: SOURCE itself, or its verified pretrained weights
    unpacked into the cache."""
    if not pretrained:
        return Path(source)
    from cnnzoo.pretrained import unpack

    return unpack(source)


@app.command(name="eval")
def eval_(
    source: RunSource,
    split_choice: Annotated[
        EvalSplit, typer.Option("--split", help="the split to evaluate (val: the part of train "
                                "held out by data.val_split)")
    ] = EvalSplit.test,
    as_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False,
    data_root: Annotated[
        str | None, typer.Option("--data-root", help="look for the dataset here first")
    ] = None,
    device: DeviceOption = "auto",
    pretrained: PretrainedFlag = False,
) -> None:
    """Accuracy, loss, per-class accuracy and confusion matrix of a trained run."""
    from cnnzoo.train import evaluate_run

    _check_device(device)
    split = split_choice.value
    run_dir = _run_dir(source, pretrained)
    result, classes = evaluate_run(run_dir, split, data_root, device)
    per_class = result.per_class()
    if as_json:
        print(json.dumps({
            "run": source, "split": split, "accuracy": result.accuracy,
            "loss": result.loss, "samples": result.samples,
            "per_class": dict(zip(classes, per_class, strict=True)),
            "classes": classes, "confusion": result.confusion.tolist(),
        }, indent=2))
        return
    from cnnzoo.summary import format_table

    print(f"{source} on {split}: accuracy {result.accuracy:.2%}, loss {result.loss:.4f}, "
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
    source: RunSource,
    images: Annotated[list[Path], typer.Argument(help="image files (png, jpg, ...)")],
    top: Annotated[int, typer.Option("--top", "-t", min=1, help="classes to show")] = 3,
    as_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False,
    device: DeviceOption = "auto",
    pretrained: PretrainedFlag = False,
) -> None:
    """The most likely classes, with probabilities, for image files (for a run trained
    with the svm or margin loss: the class scores, which are not probabilities)."""
    from cnnzoo.predict import predict_files, unreadable

    _check_device(device)
    results = predict_files(_run_dir(source, pretrained), images, top, device)
    if as_json:
        print(json.dumps(results, indent=2))
    else:
        for item in results:
            if "top" in item:
                guesses = ", ".join(
                    f"{g['class']} {g['probability']:.1%}" if "probability" in g
                    else f"{g['class']} score {g['score']:.3f}" for g in item["top"])
                print(f"{item['image']}: {guesses}")
    error = unreadable(results)  # every readable file is answered first
    if error is not None:
        raise error


@app.command(name="filter")
def filter_(
    image: Annotated[Path, typer.Argument(help="a grayscale or RGB image file (png, jpg, ...)")],
    out: Annotated[Path, typer.Option("--out", "-o", help="the PNG grid to write")],
    kernel_choices: Annotated[
        list[FixedKernel] | None,
        typer.Option("--kernel", "-k", help="a fixed kernel, one panel each (repeatable)"),
    ] = None,
    padding_mode: Annotated[
        PaddingMode, typer.Option("--padding-mode", help="what the padding around the image "
                                  "holds")
    ] = PaddingMode.reflect,
    impl: Annotated[
        ConvImpl, typer.Option("--impl", help="direct convolution, through FFTs, or the faster "
                               "of the two")
    ] = ConvImpl.direct,
    lowpass: Annotated[
        list[float] | None,
        typer.Option("--lowpass", help="a low-pass filter in frequency: the cutoff in cycles "
                     "per pixel, in (0, 0.707]; Nyquist is 0.5 (repeatable)"),
    ] = None,
    highpass: Annotated[
        list[float] | None,
        typer.Option("--highpass", help="a high-pass filter: 1 - the low-pass (repeatable)"),
    ] = None,
    bandpass: Annotated[
        tuple[float, float] | None,
        typer.Option("--bandpass", help="LOW HIGH: keep the frequencies between them"),
    ] = None,
    shape: Annotated[
        FreqShape, typer.Option("--shape", help="the frequency filters' profile")
    ] = FreqShape.gaussian,
    spectrum: Annotated[
        bool, typer.Option("--spectrum", help="add each panel's centred log-magnitude spectrum")
    ] = False,
    full_size: Annotated[
        bool, typer.Option("--full-size", help="draw panels at the image's size, not shrunk to "
                           "1024 pixels on the long side")
    ] = False,
) -> None:
    """Apply classic kernels (blur, sharpen, edges) through cnnzoo's conv layer and
    low-, high- or band-pass filters through its freq_filter layer to an image; write
    the original and one panel per filter as one PNG."""
    from cnnzoo.filter import FrequencyOptions, write_filter_grid

    kernels = [k.value for k in kernel_choices or []]
    frequency = FrequencyOptions(tuple(lowpass or ()), tuple(highpass or ()),
                                 (bandpass,) if bandpass else (), shape.value)
    result = write_filter_grid(image, kernels, out, padding_mode.value, impl.value, frequency,
                               spectrum, full_size)
    for note in result.notes:
        print(note)
    count = len(result.panels) - 1
    print(f"wrote {out} ({result.grid.width}x{result.grid.height}: the original and {count} "
          f"filter{'' if count == 1 else 's'}{', with spectra' if spectrum else ''})")


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

    skipped: list[tuple[Path, str]] = []
    rows = compare_runs(run_dirs, skipped)
    for path, why in skipped:  # reported, and the rest compared
        print(f"warning: skipped {path}: {why}", file=sys.stderr)
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
    source: RunSource,
    image: Annotated[Path, typer.Option("--image", "-i", help="an image file (png, jpg, ...)")],
    out: Annotated[
        Path | None,
        typer.Option("--out", "-o", help="a .png (one picture) or a directory (one per layer); "
                     "default RUN_DIR/activations-IMAGE.png; with --pretrained "
                     "./activations-NAME-IMAGE.png"),
    ] = None,
    device: DeviceOption = "auto",
    pretrained: PretrainedFlag = False,
) -> None:
    """The activation volume of every conv, local and pool layer for one image, each a
    grid of its depth slices (W x H x D as D tiles); for capsule networks also the
    capsules' lengths and the decoder's reconstruction."""
    from cnnzoo.viz import visualize_run

    _check_device(device)
    run_dir = _run_dir(source, pretrained)
    if out is None and pretrained:
        out = Path(f"activations-{run_dir.name.rsplit('-', 1)[0]}-{image.stem}.png")
    for path in visualize_run(run_dir, image, out, device):
        print(path)


@app.command()
def tune(
    config: ConfigOption,
    space: Annotated[str, typer.Option("--space", help="a search space file (YAML), or the "
                                       "name of a bundled one (configs/spaces)")],
    overrides: SetOption = None,
    trials: Annotated[
        int | None, typer.Option("--trials", min=1, help="finished trials the study ends with, "
                                 "in total (default: the space's trials)"),
    ] = None,
    workers: Annotated[
        int, typer.Option("--workers", min=1, help="worker processes on this machine, "
                          "sharing its cores")
    ] = 1,
    storage: Annotated[
        str | None, typer.Option("--storage", help="an Optuna storage URL (e.g. "
                                 "postgresql://host/db) or journal:PATH; default: "
                                 "sqlite in OUT")
    ] = None,
    study: Annotated[
        str | None, typer.Option("--study", help="the study's name (default: the config's)")
    ] = None,
    out: Annotated[
        Path | None, typer.Option("--out", "-o", help="directory for the trials and the report "
                                  "(default tune/NAME)")
    ] = None,
    data_root: Annotated[
        str | None, typer.Option("--data-root", help="look for the dataset here first")
    ] = None,
    device: Annotated[str | None, typer.Option("--device", help="auto, cpu, cuda or mps")] = None,
    heartbeat: Annotated[
        int, typer.Option("--heartbeat", min=1, help="seconds between a worker's signs of "
                          "life; a trial silent for 3x this is failed and run again")
    ] = 10,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="no progress bar")] = False,
) -> None:
    """Search hyperparameters with Optuna (TPE, median pruning): each trial is a run in
    OUT/trials/; the same command again continues the study. A space file:

    trials: 24 / objective: val_accuracy / space: {train.optimizer.lr: {low: 1.0e-4,
    high: 0.1, log: true}, model.layers[1].conv.kernel: [3, 5, 7]}"""
    import importlib.util
    import os

    from cnnzoo.config import load_config

    if importlib.util.find_spec("optuna") is None:
        raise CnnzooError("cnnzoo tune needs Optuna: pip install '.[tune]'")
    from cnnzoo.tune import TuneSettings, default_storage
    from cnnzoo.tune import tune as run_tune

    name = load_config(config, overrides or []).name
    out = out if out is not None else Path("tune") / name
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    run_tune(TuneSettings(
        config=config, base=tuple(overrides or []), space_path=str(space), out=out,
        storage=storage or default_storage(out), study=study or name, trials=trials or 0,
        workers=workers, threads=max(1, (cores or 1) // workers), heartbeat=heartbeat,
        data_root=data_root, device=device,
    ), show_progress=not quiet)


@app.command()
def export(
    source: RunSource,
    fmt: Annotated[str, typer.Option("--format", "-f", help="onnx, torchscript or exported "
                                     "(a torch.export .pt2)")],
    out: Annotated[Path, typer.Option("--out", "-o", help="the file to write")],
    pretrained: PretrainedFlag = False,
    with_preprocessing: Annotated[
        bool, typer.Option("--with-preprocessing", help="take uint8 images N x C x H x W as "
                           "the dataset stores them; the run's channels, resize, pad and "
                           "normalisation happen inside the graph")
    ] = False,
) -> None:
    """A trained network as a file that runs without cnnzoo (dynamic batch size), checked
    against the PyTorch module before it is kept."""
    from cnnzoo.export import check_format, export_run

    check_format(fmt)
    result = export_run(_run_dir(source, pretrained), fmt, out, with_preprocessing)
    print(f"wrote {result.path} ({fmt}; input: {result.inputs})")


def run(argv: list[str] | None = None) -> int:
    """Run the CLI on `argv` and return the exit code; user errors print one line."""
    from cnnzoo.distributed import worker_rank
    from cnnzoo.train import Interrupted

    try:
        code = app(args=argv, prog_name="cnnzoo", standalone_mode=False)
    except CnnzooError as exc:
        rank = worker_rank()
        print(f"{'' if not rank else f'[rank {rank}] '}error: {exc}", file=sys.stderr)
        return USER_ERROR
    except Interrupted as exc:
        if not worker_rank():  # every process stopped at the same step; one says so
            print(str(exc), file=sys.stderr)
        return exc.exit_code
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as exc:
        # The parser's errors (an unknown option, a wrong choice, a missing argument) are
        # click's exceptions, which Typer bundles privately: known by their interface.
        if not (hasattr(exc, "format_message") and getattr(exc, "exit_code", None) == 2):
            raise
        if type(exc).__name__ == "NoArgsIsHelpError":  # `cnnzoo` alone: the help, as is
            exc.show()
            return USER_ERROR
        print(f"error: {exc.format_message()} (see cnnzoo {' '.join(_command(argv))}--help)",
              file=sys.stderr)
        return USER_ERROR
    return code if isinstance(code, int) else 0  # --help and typer.Exit give a code


def _command(argv: list[str] | None) -> list[str]:
    """The command named in `argv`, with a space after it, for pointing to its --help."""
    words = sys.argv[1:] if argv is None else argv
    name = next((w for w in words if not w.startswith("-")), None)
    known = name is not None and name in typer.main.get_command(app).commands
    return [f"{name} "] if known else []


def main() -> None:
    """The `cnnzoo` console script."""
    from cnnzoo.startup import quiet_interrupt

    with quiet_interrupt():  # also while `run` imports the training code
        code = run()
    sys.exit(code)

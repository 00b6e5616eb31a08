"""The `cnnzoo` commands that read a trained run or an image: eval, predict, filter,
compare, viz and export (registered on the app by cnnzoo.cli.app, in its order)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer

from cnnzoo.cli.options import (
    ConvImpl,
    DeviceOption,
    EvalSplit,
    FixedKernel,
    FreqShape,
    PaddingMode,
    PretrainedFlag,
    RunSource,
    TtaMode,
    check_device,
    run_dir_of,
)
from cnnzoo.cli.serve import Backend, BackendOption


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
    tta: Annotated[
        TtaMode | None, typer.Option("--tta", help="test-time augmentation instead of the "
                                     "run's train.tta (flip_shift: 10 views per image)")
    ] = None,
    predictions: Annotated[
        Path | None, typer.Option("--predictions", help="also write each image's true class, "
                                  "predicted class and top-3 scores to this .npz (for a "
                                  "train --seeds parent: one file per seed, NAME-seed-S.npz)")
    ] = None,
) -> None:
    """Accuracy, loss, per-class accuracy and confusion matrix of a trained run; for a
    train --seeds parent, each seed's accuracy and loss, and their mean and sd."""
    from cnnzoo.runs.seeds import is_seed_parent
    from cnnzoo.tools.evaluate import evaluate_run, write_eval_predictions
    from cnnzoo.utils.files import check_writable

    check_device(device)
    split = split_choice.value
    run_dir = run_dir_of(source, pretrained)
    if predictions is not None:
        check_writable(predictions, "--predictions")
    if not pretrained and is_seed_parent(run_dir):
        _eval_seeds(source, split, data_root, device, tta, predictions, as_json)
        return
    result, classes = evaluate_run(run_dir, split, data_root, device,
                                   None if tta is None else tta.value)
    if predictions is not None:
        write_eval_predictions(run_dir, result, split, predictions)
    per_class = result.per_class()
    if as_json:
        print(json.dumps({
            "run": source, "split": split, "accuracy": result.accuracy,
            "loss": result.loss, "samples": result.samples,
            "per_class": dict(zip(classes, per_class, strict=True)),
            "classes": classes, "confusion": result.confusion.tolist(),
        }, indent=2))
        return
    from cnnzoo.utils.format import format_table

    views = "" if tta is None else f" (tta {tta.value})"
    print(f"{source} on {split}{views}: accuracy {result.accuracy:.2%}, loss {result.loss:.4f}, "
          f"{result.samples:,} images\n")
    rows = [(name, f"{acc:.2%}", f"{int(result.confusion[i].sum()):,}")
            for i, (name, acc) in enumerate(zip(classes, per_class, strict=True))]
    print(format_table(("class", "accuracy", "images"), rows, {"accuracy", "images"}))
    print("\nconfusion matrix (rows: true class, columns: predicted)")
    header = ("", *(str(i) for i in range(len(classes))))
    matrix = [(f"{i} {name}", *(str(int(v)) for v in result.confusion[i]))
              for i, name in enumerate(classes)]
    print(format_table(header, matrix, set(header[1:])))
    if predictions is not None:
        print(f"\nper-image predictions: {predictions}")


def _eval_seeds(source: str, split: str, data_root: str | None, device: str,
                tta: TtaMode | None, predictions: Path | None, as_json: bool) -> None:
    """`eval PARENT`: every seed's run, then the mean and sd over the seeds."""
    from cnnzoo.tools.evaluate import evaluate_seeds, predictions_file, write_eval_predictions
    from cnnzoo.utils.spread import mean_sd_text, statistics

    evaluated, classes = evaluate_seeds(Path(source), split, data_root, device,
                                        None if tta is None else tta.value)
    written = []
    for seed, run_dir, result in evaluated:
        if predictions is not None:
            written.append(predictions_file(predictions, seed))
            write_eval_predictions(run_dir, result, split, written[-1])
    accuracy = statistics([result.accuracy for _, _, result in evaluated])
    if as_json:
        print(json.dumps({
            "run": source, "split": split, "accuracy": accuracy, "classes": classes,
            "seeds": [{"seed": seed, "run": str(run_dir), "accuracy": result.accuracy,
                       "loss": result.loss, "samples": result.samples,
                       "per_class": dict(zip(classes, result.per_class(), strict=True))}
                      for seed, run_dir, result in evaluated],
        }, indent=2))
        return
    from cnnzoo.utils.format import format_table

    views = "" if tta is None else f" (tta {tta.value})"
    print(f"{source} on {split}{views}: {len(evaluated)} seeds, accuracy "
          f"{mean_sd_text(accuracy)} (mean +- sd in points)\n")
    rows = [(str(seed), f"{result.accuracy:.2%}", f"{result.loss:.4f}", f"{result.samples:,}",
             str(run_dir)) for seed, run_dir, result in evaluated]
    print(format_table(("seed", "accuracy", "loss", "images", "run"), rows,
                       {"accuracy", "loss", "images"}))
    if written:
        print("\nper-image predictions: " + ", ".join(map(str, written)))


def predict(
    source: RunSource,
    inputs: Annotated[
        list[str], typer.Argument(help="image files (png, jpg, ...), folders (searched "
                                  "recursively), quoted globs ('shots/*.png') or @list.txt "
                                  "(one path a line)")
    ],
    top: Annotated[int, typer.Option("--top", "-t", min=1, help="classes to show")] = 3,
    as_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False,
    out: Annotated[
        Path | None, typer.Option("--out", "-o", help="write the answers to a .csv, .jsonl or "
                                  ".json file (by its suffix), with an error column")
    ] = None,
    batch_size: Annotated[
        int, typer.Option("--batch-size", "-b", min=1, help="images per forward pass")
    ] = 64,
    workers: Annotated[
        int | None, typer.Option("--workers", min=0, help="processes that decode images "
                                 "(default: one per core but one; 0: none)")
    ] = None,
    backend: BackendOption = Backend.torch,
    device: DeviceOption = "auto",
    pretrained: PretrainedFlag = False,
) -> None:
    """The most likely classes, with probabilities, for image files (for a run trained
    with the svm or margin loss: the class scores, which are not probabilities)."""
    from cnnzoo.errors import CnnzooError
    from cnnzoo.tools.predict.inputs import iter_inputs
    from cnnzoo.tools.predict.outputs import check_out, open_writer, progress_bar
    from cnnzoo.tools.predict.predictor import Predictor
    from cnnzoo.tools.predict.stream import Tally, stream_predictions

    check_device(device)
    if out is not None:
        check_out(out)
    predictor = Predictor(run_dir_of(source, pretrained), backend=backend.value, device=device,
                          top=top)
    tally = Tally()
    answers = stream_predictions(predictor, iter_inputs(inputs), batch_size, workers)
    columns = min(top, len(predictor.classes))
    with progress_bar(out is not None or as_json) as bar, open_writer(
            out, as_json and out is None, columns, predictor.kind) as write:
        for item in answers:
            write(item)
            tally.add(item)
            bar.update()
        if tally.images == 0:  # before an empty --out file is kept
            raise CnnzooError(f"no image files in {' '.join(inputs)}")
    if out is not None:
        print(f"wrote {out} ({tally.images:,} images, {tally.failed:,} could not be read)")
    error = tally.failure()  # every readable file is answered first
    if error is not None:
        raise error


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
    from cnnzoo.tools.filter import FrequencyOptions, write_filter_grid

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


def compare(
    run_dirs: Annotated[
        list[str],
        typer.Argument(help="run directories, train --seeds parents, or quoted patterns "
                       "such as 'runs/*'"),
    ],
    plot: Annotated[
        Path, typer.Option("--plot", help="where to draw test accuracy against parameters")
    ] = Path("compare.png"),
    no_plot: Annotated[bool, typer.Option("--no-plot", help="draw nothing")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False,
) -> None:
    """Trained runs side by side: params, mult-adds, test accuracy, train time, device;
    whether the best is better than each other run beyond noise (McNemar's exact test
    and a paired-bootstrap 95% interval on the shared test images; Welch's t-test over
    the seeds of train --seeds parents; Holm's correction for several runs); and a PNG
    of test accuracy against parameters (log scale)."""
    from cnnzoo.tools.compare import (
        compare_runs,
        comparison_json,
        format_comparison,
        paired_verdicts,
        plot_comparison,
    )
    from cnnzoo.utils.files import check_writable

    if not no_plot:
        check_writable(plot, "--plot")
    skipped: list[tuple[Path, str]] = []
    rows = compare_runs(run_dirs, skipped)
    for path, why in skipped:  # reported, and the rest compared
        print(f"warning: skipped {path}: {why}", file=sys.stderr)
    verdicts = paired_verdicts(rows)
    drawn = None if no_plot else plot_comparison(rows, plot)
    if as_json:
        print(json.dumps({"runs": comparison_json(rows), "paired": verdicts.json(),
                          "plot": str(drawn) if drawn else None}, indent=2))
        return
    print(format_comparison(rows, verdicts))
    if drawn is not None:
        print(f"\nplot: {drawn}")


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
    capsules' lengths and the decoder's reconstruction. For a train --seeds parent:
    its first seed's network."""
    from cnnzoo.runs.seeds import is_seed_parent, open_seed_parent
    from cnnzoo.tools.viz import visualize_run

    check_device(device)
    run_dir = run_dir_of(source, pretrained)
    if not pretrained and is_seed_parent(run_dir):
        parent = open_seed_parent(run_dir)
        run_dir = parent.runs[0]
        print(f"seed {parent.seeds[0]} of {len(parent.seeds)}: {run_dir}", file=sys.stderr)
    if out is None and pretrained:
        out = Path(f"activations-{run_dir.name.rsplit('-', 1)[0]}-{image.stem}.png")
    for path in visualize_run(run_dir, image, out, device):
        print(path)


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
    from cnnzoo.tools.export import check_format, export_run

    check_format(fmt)
    result = export_run(run_dir_of(source, pretrained), fmt, out, with_preprocessing)
    print(f"wrote {result.path} ({fmt}; input: {result.inputs})")

"""What a network holds, as arrays for pictures: its first layer's filters, and the
activation volume of every conv, local and pool layer for one image (`cnnzoo viz`).
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from cnnzoo.errors import CnnzooError
from cnnzoo.layers.spec import LayerPlan
from cnnzoo.model.build import Network
from cnnzoo.model.inspect import layer_modules
from cnnzoo.utils import pictures
from cnnzoo.utils.files import check_writable

# Layers whose output is a volume worth seeing slice by slice: the layers that slide
# a window over W x H. Activations, batchnorm and dropout keep their input's volume.
VOLUME_LAYER_TYPES = frozenset({"conv", "local", "pool", "primary_capsules"})
# Capsule layers drawn as what they mean: a vector of capsules as a strip of their
# lengths (the class scores), a decoder as its reconstruction of the image.
CAPSULE_LAYER_TYPES = frozenset({"capsules", "decoder"})


@torch.no_grad()
def activation_volumes(model: Network,
                       x: torch.Tensor) -> list[tuple[LayerPlan, pictures.Volume3d]]:
    """The output of every conv, local and pool layer for one normalised image
    `x` (1, C, H, W), in the order of the summary's rows."""
    chosen = [(plan, module) for plan, module in layer_modules(model)
              if (plan.type_name in VOLUME_LAYER_TYPES and not plan.output.flat)
              or plan.type_name in CAPSULE_LAYER_TYPES]
    outputs: dict[str, torch.Tensor] = {}
    handles = []
    for plan, module in chosen:
        def keep(mod: nn.Module, inp: object, out: torch.Tensor, index: str = plan.index) -> None:
            outputs[index] = out.detach()

        handles.append(module.register_forward_hook(keep))
    try:
        was_training = model.training
        model.eval()
        model(x)
        model.train(was_training)
    finally:
        for handle in handles:
            handle.remove()
    return [(plan, _picture(plan, module, outputs[plan.index][0]))
            for plan, module in chosen if plan.index in outputs]


def _picture(plan: LayerPlan, module: nn.Module, out: torch.Tensor) -> pictures.Volume3d:
    """One layer's output for one image as a (D, H, W) picture with its title."""
    title = f"{plan.index} {plan.label}\n{plan.output}"
    if plan.type_name == "capsules":
        dim = plan.output.capsule_dim or 1
        lengths = out.float().view(-1, dim).norm(dim=1).cpu()
        best = int(lengths.argmax())
        title += f"\nlengths; longest: capsule {best}, {float(lengths[best]):.2f}"
        return pictures.Volume3d(title, lengths.view(1, 1, -1).numpy())
    if plan.type_name == "decoder":
        reconstruction = module.reconstruction[0].float().cpu()
        return pictures.Volume3d(f"{plan.index} reconstruction from the longest capsule",
                                 reconstruction.numpy())
    return pictures.Volume3d(title, out.float().cpu().numpy())


def default_output(run_dir: Path, image: Path) -> Path:
    return Path(run_dir) / f"activations-{Path(image).stem}.png"


def visualize_run(run_dir: Path, image: Path, out: Path | None = None,
                  device: str = "auto") -> list[Path]:
    """Draw the activation volumes of a trained run for one image file, preprocessed
    as in training. `out` is a .png (one picture, a panel per layer) or a directory
    (one picture per layer); default: RUN_DIR/activations-IMAGE.png."""
    from cnnzoo.data.images import read_image
    from cnnzoo.layers.shapes import Volume
    from cnnzoo.model.devices import resolve_device
    from cnnzoo.runs import rundir
    from cnnzoo.runs.load import load_run_model, run_transform

    run = rundir.open_run(run_dir)
    if not Path(image).is_file():
        raise CnnzooError(f"no image file {image}")
    out = default_output(run.path, image) if out is None else Path(out)
    as_file = out.suffix.lower() == ".png"
    if not as_file and out.exists() and not out.is_dir():
        raise CnnzooError(f"--out {out} is an existing file that is not a .png; give a .png "
                          "file name or a directory")
    if not as_file and out.suffix and not out.is_dir():
        raise CnnzooError(f"--out {out}: give a .png file or a directory")
    if as_file and out.is_dir():
        raise CnnzooError(f"--out {out} is a directory; give a .png file name or the directory "
                          "without the .png suffix")
    check_writable(out, folder=not as_file)
    torch_device = resolve_device(device)
    model = load_run_model(run, torch_device)
    volume = Volume(*run.info["input"])
    pixels = read_image(Path(image), volume)  # uint8 (C, H, W), as training saw them
    x = run_transform(run, torch_device).normalize(pixels.unsqueeze(0).to(torch_device))
    volumes = activation_volumes(model, x)
    if not volumes:
        raise CnnzooError(f"{run.path}: the network {run.config.name} has no conv, local or pool "
                          "layer whose activation volume could be drawn")
    title = f"{run.config.name}: activation volumes for {Path(image).name}"
    raw = pixels.numpy()
    if as_file:
        out.parent.mkdir(parents=True, exist_ok=True)
        figure = pictures.activations_figure(raw, [v for _, v in volumes], title)
        return [pictures.save_png(figure, out)]
    out.mkdir(parents=True, exist_ok=True)
    written = [pictures.save_png(pictures.image_figure(raw, f"input {volume}"),
                                 out / "00-input.png")]
    for position, (plan, item) in enumerate(volumes, start=1):
        name = f"{position:02d}-{plan.type_name}-{plan.index}.png"
        written.append(pictures.save_png(pictures.volume_figure(item), out / name))
    return written

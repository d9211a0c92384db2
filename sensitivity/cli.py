"""Command line interface: ``sensitivity <command> ...`` (also ``python -m sensitivity``).

Commands
--------
localize    predicted class and object box for image files and folders of images: a CSV (and a figure per
            image).

Exit codes: 0 success, 1 when some inputs failed (the others are still processed; each failure is a row of the
CSV), 2 for usage errors (bad options, unknown model, weights that cannot be read or fetched, a file that is not
a box model) and when no input is a readable image (then nothing is written and no model is loaded).
"""

from __future__ import annotations

import argparse
import csv
import itertools
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

if TYPE_CHECKING:
    from sensitivity.localize import Failure

#: CSV columns of ``localize``'s boxes.csv / --boxes-csv: one row per input (box corners in pixels of the original
#: image; ``figure`` is empty when no figures are drawn). ``error`` is empty for a localized image; an input that
#: failed has only ``path`` and ``error``.
LOCALIZE_COLUMNS = (
    "path", "width", "height", "class_index", "class_name", "score", "x1", "y1", "x2", "y2", "method", "figure",
    "error",
)


class UsageError(Exception):
    """A problem with the command's arguments found after parsing (exit code 2)."""


def _write(stream: TextIO, text: str) -> None:
    """Write text that may hold characters the stream cannot encode (σ, odd file names) without failing."""
    encoding = getattr(stream, "encoding", None) or "utf-8"
    try:
        text.encode(encoding)
    except (UnicodeEncodeError, LookupError):
        text = text.encode(encoding, errors="backslashreplace").decode(encoding, errors="replace")
    stream.write(text)


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def _non_negative_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not (value >= 0 and value != float("inf")):
        raise argparse.ArgumentTypeError(f"expected a finite number >= 0, got {text}")
    return value


def _fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number in (0, 1], got {text!r}") from None
    if not 0 < value <= 1:
        raise argparse.ArgumentTypeError(f"expected a number in (0, 1], got {text}")
    return value


def _unit_interval(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1), got {text!r}") from None
    if not 0 <= value < 1:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1), got {text}")
    return value


def _resolve_device(name: str) -> str:
    import torch

    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise UsageError("--device cuda: no CUDA device is available (use --device cpu or auto)")
    return name


def _unique_stem(stem: str, used: set[str]) -> str:
    """``stem``, or ``stem-1``, ``stem-2``, ... if taken (case-insensitively, for macOS/Windows disks)."""
    candidate, n = stem, 0
    while candidate.lower() in used:
        n += 1
        candidate = f"{stem}-{n}"
    used.add(candidate.lower())
    return candidate


# --- localize ------------------------------------------------------------------------------------

#: The heuristic box's defaults and σ's unit (sensitivity.boxes), repeated here so that building the parser
#: (``--help``) stays fast without importing torch; tests check they agree.
DEFAULT_SIGMA = 8.0
DEFAULT_FRACTION = 0.2
SIGMA_REFERENCE_SIDE = 224
#: ``--out`` when neither it nor ``--boxes-csv`` is given.
DEFAULT_OUT = "localize_out"
#: sensitivity.localize.MAP_DEFAULTS and its boxes without a regressor, repeated for the same reason.
MAP_DEFAULTS = {"model": "efficientnet_lite0", "target": "class", "aggregate": "mean", "method": "gradcam"}
BOXES = ("threshold", "heuristic")
#: ``--box``: a learned box model (``--regressor FILE``, else the one shipped with the package), or a box
#: without learning.
BOX_CHOICES = ("learned", *BOXES)

#: sensitivity.images.MAX_PIXELS, repeated for the same reason.
DEFAULT_MAX_PIXELS = 400_000_000
#: sensitivity.localize.IMAGE_SUFFIXES, repeated for the same reason (tests check they agree).
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp")


def _add_localize(subparsers) -> None:
    p = subparsers.add_parser(
        "localize",
        help="predict the class and the object box of images",
        description=(
            "Predict the class and a bounding box of the main object of each image from its sensitivity "
            "map. Prints one tab-separated line per image (path, class index, class name, score, box "
            "x1 y1 x2 y2 in pixels, method) and writes one CSV row per image: to --boxes-csv, or to "
            "boxes.csv in --out, which also gets a figure per image."
        ),
    )
    p.add_argument("images", nargs="+", metavar="IMAGE|DIR",
                   help="image files (JPEG, PNG, ...) and folders: a folder stands for the image files in it "
                        f"({', '.join(IMAGE_SUFFIXES)}, any case; hidden files left out), sorted by path")
    p.add_argument("-r", "--recursive", action="store_true",
                   help="folders also give the images of their sub-folders")
    p.add_argument("--model", default=None,
                   help=f"network name (default: the box model's, else {MAP_DEFAULTS['model']}, embedded)")
    p.add_argument("--weights", default=None, metavar="PATH",
                   help="state dict to load instead of the default pretrained weights")
    p.add_argument("--target", choices=("class", "gestalt"), default=None,
                   help="map of the predicted class's score or of the Gestalt Total (default: the regressor's, "
                        f"else {MAP_DEFAULTS['target']})")
    p.add_argument("--aggregate", choices=("max", "mean"), default=None,
                   help=f"|gradient| over colour channels (default: the regressor's, else {MAP_DEFAULTS['aggregate']})")
    p.add_argument("--method", default=None,
                   help="map method: gradient, input_x_gradient, smoothgrad, integrated_gradients, guided_backprop, "
                        f"gradcam or cam (default: the regressor's, else {MAP_DEFAULTS['method']})")
    p.add_argument("--regressor", default=None, metavar="FILE",
                   help="box model (.npz) fitted by the workflow (results/<dataset>/regressor.npz); default: the "
                        "one shipped with the package, fitted on ImageNet photos. A box model records the model, "
                        "target, aggregate and map method of its maps: they are the defaults, and other values "
                        "are an error")
    p.add_argument("--box", choices=BOX_CHOICES, default=None,
                   help="learned: the box model's box (--regressor, else the shipped one); threshold: the map "
                        "thresholded at --threshold, the box of its largest region; heuristic: the paper's box. "
                        "Default: learned, or threshold when a --model/--target/--aggregate/--method flag asks for "
                        "maps the shipped box model was not fitted on")
    p.add_argument("--threshold", type=_unit_interval, default=None, metavar="TAU",
                   help="threshold box: τ on the min-max normalised map (default: the one chosen for the map method "
                        "on ImageNet, e.g. 0.29 for gradcam)")
    p.add_argument("--sigma", type=_non_negative_float, default=DEFAULT_SIGMA,
                   help=f"heuristic: Gaussian smoothing σ in pixels of a {SIGMA_REFERENCE_SIDE}-pixel image side, "
                        "whatever the map's size (default: %(default)s)")
    p.add_argument("--fraction", type=_fraction, default=DEFAULT_FRACTION,
                   help="heuristic: share of the top map pixels kept (default: %(default)s)")
    p.add_argument("--out", default=None, metavar="DIR",
                   help=f"folder for a figure per image and boxes.csv (default: {DEFAULT_OUT}, or none with "
                        "--boxes-csv)")
    p.add_argument("--boxes-csv", default=None, metavar="PATH",
                   help="write the CSV exactly here (folders created) instead of boxes.csv in --out; without "
                        "--out, no figures are drawn")
    p.add_argument("--max-pixels", type=_positive_int, default=DEFAULT_MAX_PIXELS, metavar="N",
                   help="images with more pixels (width x height) are refused as inputs that failed "
                        "(default: %(default)s)")
    p.add_argument("--device", choices=("cpu", "cuda", "auto"), default="auto", help="(default: %(default)s)")
    p.add_argument("--batch-size", type=_positive_int, default=8, metavar="N",
                   help="images per forward/backward pass (default: %(default)s)")
    p.set_defaults(run=_run_localize)


def _regressor(args: argparse.Namespace) -> tuple:
    """The box model of ``--regressor`` (None without it) and the name its errors use."""
    from sensitivity.box_model import load_box_model

    if args.regressor is None:
        return None, "the regressor"
    if args.box not in (None, "learned"):
        raise UsageError(f"--box {args.box}: --regressor gives a learned box; drop one of them")
    try:
        return load_box_model(args.regressor), args.regressor
    except (OSError, ValueError) as error:
        raise UsageError(f"--regressor: {error}") from None


def _choose_box(args: argparse.Namespace):
    """:func:`sensitivity.localize.choose_box` for the flags; its errors name the flag they come from."""
    from sensitivity.localize import choose_box

    regressor, source = _regressor(args)
    given = {"model": args.model, "target": args.target, "aggregate": args.aggregate, "method": args.method}
    try:
        return choose_box(regressor, args.box, source, **given)
    except ValueError as error:
        if args.regressor is None and args.box != "learned":
            raise UsageError(f"--method: {error}") from None
        flag = "--regressor" if args.regressor is not None else "--box learned"
        raise UsageError(f"{flag}: {error} (or --box threshold / heuristic for a box without learning)") from None


def _fitted_on(regressor) -> str:
    """What a box model was fitted on, in words (from its ``fitted_on_`` record)."""
    made, fitted = getattr(regressor, "provenance_", {}), getattr(regressor, "fitted_on_", None) or {}
    maps = f"{made.get('method', '?')} maps of {made.get('model', '?')}"
    if not fitted:
        return maps
    return (f"{maps}, fitted on {fitted['n_images']} images of dataset {fitted['dataset']}; CorLoc "
            f"{100 * fitted['score']:.1f} % by {fitted['selection']}")


def _input_error(failure: Failure, recursive: bool) -> str:
    """A failed input's reason, with the --recursive hint for a folder without images."""
    from sensitivity.localize import EMPTY_FOLDER

    hint = failure.message == EMPTY_FOLDER and not recursive
    return f"{failure.message}{' (sub-folders are read with --recursive)' if hint else ''}"


def _run_localize(args: argparse.Namespace) -> int:
    from sensitivity.figures import plot_localization
    from sensitivity.localize import (
        DEFAULT_THRESHOLDS,
        Failure,
        check_regressor,
        expand_image_paths,
        first_readable,
        iter_localize,
    )
    from sensitivity.map_methods import CONV_BLOCK_METHODS
    from sensitivity.models import UnknownModelError, WeightsError, load_model

    csv_path = Path(args.boxes_csv) if args.boxes_csv is not None else None
    if csv_path is not None and csv_path.is_dir():
        raise UsageError(f"--boxes-csv {csv_path}: is a folder (give the CSV file's path)")
    out = Path(args.out) if args.out is not None else None if csv_path is not None else Path(DEFAULT_OUT)
    images, input_failures = expand_image_paths(args.images, recursive=args.recursive)
    device = _resolve_device(args.device)
    choice = _choose_box(args)
    options, regressor = choice.options, choice.regressor
    total = len(images) + len(input_failures)
    readable, unread = first_readable(images, max_pixels=args.max_pixels)
    if readable is None:
        for failure in [*input_failures, *unread]:
            _write(sys.stderr, f"error: {failure.path}: {_input_error(failure, args.recursive)}\n")
        raise UsageError(f"none of the {total} inputs is a readable image: nothing localized, nothing written")
    try:
        model = load_model(options["model"], weights=args.weights, device=device)
    except (UnknownModelError, WeightsError) as error:
        raise UsageError(str(error)) from None
    if regressor is not None:
        try:
            check_regressor(regressor, model)
        except ValueError as error:
            raise UsageError(f"--regressor: {error}") from None
        if args.regressor is None:
            _write(sys.stderr, f"boxes come from the shipped box model ({_fitted_on(regressor)}; --box threshold or "
                               "heuristic for a box without learning)\n")
    elif choice.box == "heuristic":
        _write(sys.stderr, f"boxes come from the heuristic on the {options['method']} map "
                           f"(Gaussian σ={args.sigma:g} pixels of a {SIGMA_REFERENCE_SIDE}-pixel side, "
                           f"top {args.fraction * 100:g}% pixels)\n")
    else:
        threshold = DEFAULT_THRESHOLDS[options["method"]] if args.threshold is None else args.threshold
        gave_way = f"{choice.note}; " if choice.note else ""
        _write(sys.stderr, f"{gave_way}boxes come from the {options['method']} map thresholded at "
                           f"τ={threshold:g} (its largest region; --box heuristic for the paper's heuristic box)\n")

    channels = "" if options["method"] in CONV_BLOCK_METHODS else f" ({options['aggregate']} over channels)"
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
    if csv_path is None:
        csv_path = out / "boxes.csv"
    csv_path.parent.mkdir(parents=True, exist_ok=True)
    used_stems: set[str] = set()
    n_failed = 0
    with open(csv_path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(LOCALIZE_COLUMNS)
        results = iter_localize(
            images, model, target=options["target"], aggregate=options["aggregate"], regressor=regressor,
            sigma=args.sigma, fraction=args.fraction, batch_size=args.batch_size, keep_images=out is not None,
            method=options["method"], box=choice.box, threshold=args.threshold,
            max_pixels=args.max_pixels,
        )
        for item in itertools.chain(input_failures, results):
            if isinstance(item, Failure):
                n_failed += 1
                message = _input_error(item, args.recursive)
                _write(sys.stderr, f"error: {item.path}: {message}\n")
                writer.writerow([item.path, *[""] * (len(LOCALIZE_COLUMNS) - 2), message])
                continue
            x1, y1, x2, y2 = (float(v) for v in item.box_pixels)
            figure = ""
            if out is not None:
                figure = f"{_unique_stem(Path(item.path).stem or 'image', used_stems)}.png"
                title = (f"{Path(item.path).name}: {item.class_name} ({item.score:.2f}), {item.method} box, "
                         f"{options['method']} {options['target']} map{channels}")
                plot_localization(item.image, item.map, item.box_normalised, None, title, out / figure)
                item.image = None  # free it: results stream, one batch at a time
            writer.writerow([item.path, item.width, item.height, item.class_index, item.class_name,
                             f"{item.score:.6f}", f"{x1:.2f}", f"{y1:.2f}", f"{x2:.2f}", f"{y2:.2f}",
                             item.method, figure, ""])
            fh.flush()
            _write(sys.stdout, f"{item.path}\t{item.class_index}\t{item.class_name}\t{item.score:.4f}\t"
                               f"{x1:.1f} {y1:.1f} {x2:.1f} {y2:.1f}\t{item.method}\n")
            sys.stdout.flush()
    if n_failed:
        _write(sys.stderr, f"{n_failed} of {total} inputs failed (rows with an error in {csv_path})\n")
    return 1 if n_failed else 0


# --- entry point ---------------------------------------------------------------------------------

#: Functions adding one subcommand each; the parser calls ``args.run(args) -> exit code``.
SUBCOMMANDS: list[Callable[[argparse._SubParsersAction], None]] = [_add_localize]


def build_parser() -> argparse.ArgumentParser:
    from sensitivity import __version__

    parser = argparse.ArgumentParser(
        prog="sensitivity",
        description="Fast object localization from sensitivity maps of pretrained image classifiers.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add in SUBCOMMANDS:
        add(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code (argparse exits with 2 on bad usage)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.run(args)
    except UsageError as error:
        _write(sys.stderr, f"{parser.prog} {args.command}: error: {error}\n")
        return 2
    except KeyboardInterrupt:
        _write(sys.stderr, "interrupted\n")
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

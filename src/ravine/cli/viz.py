"""Watch optimizers on a 2-D loss surface: contour map, 3-D view, loss curves or an animation.

examples:
  ravine viz --surface beale --optimizers sgd:lr=0.001,momentum:lr=0.001,adam:lr=0.05
  ravine viz --surface saddle --optimizers sgd:lr=0.01 rmsprop:lr=0.05 --format gif
  ravine viz --surface quadratic --start=7,5 --view loss --out quad_loss.svg
  ravine viz --surface "expr:x^2 + 3*sin(y)^2" --optimizers adam:lr=0.1
  ravine viz --list
  ravine viz --gallery --out gallery/

An optimizer spec is NAME or NAME:KEY=VALUE,KEY=VALUE (values are Python literals, e.g.
adam:lr=0.1,betas=(0.9,0.99)); several specs go comma- or space-separated. A negative start
needs the = form: --start=-1.5,2.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

from ravine import surfaces
from ravine.paths import check_output_path
from ravine.viz.animation import (
    ANIMATION_FORMATS,
    MissingFFmpegError,
    animate,
    check_animation,
    ffmpeg_path,
)
from ravine.viz.plots import DEFAULT_SIZE, STATIC_FORMATS, VIEWS, check_size, output_format, plot
from ravine.viz.specs import CLASSIC, optimizer_names, parse_specs
from ravine.viz.trajectory import MAX_STEPS, check_start, check_steps, check_work
from ravine.viz.trajectory import run as run_trajectories

FORMATS = STATIC_FORMATS + ANIMATION_FORMATS
DEFAULT_OPTIMIZERS = ",".join(CLASSIC)


def _pair(text: str, what: str, sep: str = ",") -> tuple[float, float]:
    parts = text.replace("x", sep).split(sep) if what == "size" else text.split(sep)
    try:
        a, b = (float(p) for p in parts)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"--{what}={text!r}: expected two numbers, e.g. "
            + ("900x640" if what == "size" else "7,0.001")
        ) from None
    return a, b


def _start(text: str) -> tuple[float, float]:
    return _pair(text, "start")


def _size(text: str) -> tuple[int, int]:
    w, h = _pair(text, "size")
    if not (math.isfinite(w) and math.isfinite(h) and w == int(w) and h == int(h)):
        raise argparse.ArgumentTypeError(f"--size={text!r}: expected whole pixels, e.g. 900x640")
    return int(w), int(h)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--surface", default="beale", help="surface name or expr:FORMULA")
    parser.add_argument(
        "--optimizers",
        nargs="+",
        default=[DEFAULT_OPTIMIZERS],
        metavar="SPEC",
        help="optimizer specs (default: the seven classic ones with learning rates for Beale)",
    )
    parser.add_argument(
        "--steps", type=int, default=200, help=f"steps per optimizer, 1..{MAX_STEPS}"
    )
    parser.add_argument("--start", type=_start, help="start point X,Y (default: the surface's)")
    parser.add_argument(
        "--out",
        type=Path,
        help="output file (default: SURFACE[_VIEW].FORMAT in the current folder; gallery: the "
        "folder, default gallery/)",
    )
    parser.add_argument(
        "--format", choices=FORMATS, help="png, svg, gif or mp4 (default: --out's suffix, else png)"
    )
    parser.add_argument(
        "--view",
        choices=tuple(VIEWS),
        default="contour",
        help="for png/svg; an animation (gif/mp4) is always the contour view",
    )
    parser.add_argument("--stride", type=int, default=2, help="steps per animation frame")
    parser.add_argument("--fps", type=int, default=20, help="animation frames per second")
    parser.add_argument(
        "--size",
        type=_size,
        default=DEFAULT_SIZE,
        help=f"image size WxH in pixels (default: {DEFAULT_SIZE[0]}x{DEFAULT_SIZE[1]})",
    )
    parser.add_argument("--list", action="store_true", help="list surfaces and optimizers")
    parser.add_argument("--gallery", action="store_true", help="render the whole gallery")
    parser.add_argument("--quick", action="store_true", help="gallery: fewer steps, smaller")


def list_everything() -> str:
    lines = ["surfaces:"]
    for name in surfaces.names():
        s = surfaces.get(name)
        minima = ", ".join(f"({x:g}, {y:g})" for x, y in s.minima) or "none (unbounded below)"
        lines.append(f"  {name:<14s} {s.formula}")
        lines.append(
            f"  {'':<14s} start ({s.start[0]:g}, {s.start[1]:g}); window {s.window}; "
            f"minima {minima}"
        )
    lines.append("  expr:FORMULA   your own formula in x and y, e.g. expr:x^2+3*sin(y)^2")
    from ravine.optim import registry

    lines.append("optimizers (ravine's registry; NAME or NAME:KEY=VALUE,...):")
    for name in optimizer_names():
        entry = registry.get(name)
        defaults = ", ".join(f"{k}={v}" for k, v in entry.defaults.items() if k != "params")
        lines.append(f"  {name:<10s} {defaults}")
    lines.append(f"mp4: {'ffmpeg at ' + ffmpeg_path() if ffmpeg_path() else 'ffmpeg not found'}")
    return "\n".join(lines)


def _output(args: argparse.Namespace, surface: surfaces.Surface) -> tuple[Path, str]:
    """The file to write and its format, checked (format, suffix, writability) up front."""
    if args.out is None:
        fmt = args.format or "png"
        stem = surface.name if surface.name.replace("-", "").isalnum() else "surface"
        suffix = "" if args.view == "contour" or fmt in ANIMATION_FORMATS else f"_{args.view}"
        out = Path(f"{stem}{suffix}.{fmt}")
    else:
        out = args.out
        if args.format is None and out.suffix.lstrip(".").lower() not in FORMATS:
            raise ValueError(
                f"--out={str(out)!r}: suffix {out.suffix!r} is not one of "
                f"{', '.join('.' + f for f in FORMATS)}; name the file so or give --format"
            )
        fmt = output_format(out, args.format, FORMATS)
    check_output_path(out, "--out")
    return out, fmt


def _render(args: argparse.Namespace) -> int:
    # Everything that can be refused is checked before the trajectories are computed.
    surface = surfaces.get(args.surface)
    specs = parse_specs(args.optimizers)
    steps = check_steps(args.steps)
    check_work(specs, steps)
    start = None if args.start is None else check_start(args.start)
    out, fmt = _output(args, surface)
    view = args.view
    if fmt in ANIMATION_FORMATS:
        if view != "contour":
            # Refused, not ignored: the animation would silently be the contour view.
            raise ValueError(
                f"--view={view} is for png/svg; an animation (--format {fmt}) shows the contour "
                f"view only: drop --view, or write the {view} view with --format png"
            )
        check_animation(steps, args.stride, args.fps, args.size)
        if fmt == "mp4" and ffmpeg_path() is None:
            raise MissingFFmpegError(
                "--format mp4 needs ffmpeg (on PATH or from the imageio-ffmpeg package), and "
                "none was found; use gif"
            )
    else:
        check_size(args.size)
    t0 = time.perf_counter()
    trajectories = run_trajectories(surface, specs, steps=steps, start=start)
    t1 = time.perf_counter()
    if fmt in ANIMATION_FORMATS:
        path = animate(trajectories, out, fmt=fmt, stride=args.stride, fps=args.fps, size=args.size)
    else:
        plot(trajectories, out, view=view, fmt=fmt, size=args.size)
        path = out
    t2 = time.perf_counter()
    print(f"{'optimizer':<36s} {'final (x, y)':>26s} {'f(x, y)':>12s}  status")
    for t in trajectories:
        x, y = t.final
        print(f"{t.label:<36s} {f'({x:.4g}, {y:.4g})':>26s} {t.losses[-1]:12.4g}  {t.status}")
    print(f"wrote {path}  (trajectories {t1 - t0:.2f} s, drawing {t2 - t1:.2f} s)")
    return 0


def run(args: argparse.Namespace) -> int:
    try:
        if args.list:
            print(list_everything())
            return 0
        if args.gallery:
            from ravine.viz.gallery import make_gallery

            out = args.out or Path("gallery")
            check_output_path(out, "--out", directory=True)
            t0 = time.perf_counter()
            paths = make_gallery(out, quick=args.quick, verbose=True)
            print(f"wrote {len(paths)} files to {out}/ in {time.perf_counter() - t0:.1f} s")
            return 0
        return _render(args)
    except (ValueError, MissingFFmpegError, OSError) as err:
        # OSError: writing failed after the checks (a full disk, a folder removed meanwhile)
        print(f"ravine viz: error: {err}", file=sys.stderr)
        return 2


def main(argv: list[str] | None = None) -> int:
    """``python -m ravine.cli.viz ...``: the same as ``ravine viz ...``."""
    from ravine.cli import HelpFormatter

    parser = argparse.ArgumentParser(
        prog="ravine viz", description=__doc__, formatter_class=HelpFormatter
    )
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())

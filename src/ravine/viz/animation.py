"""Animations in which the optimizers move together, step by step: GIF (Pillow) or MP4 (ffmpeg).

Frame ``i`` (0-based) shows every path up to step ``min((i + 1) * stride, steps)``, so an animation
of ``steps`` steps has ``ceil(steps / stride)`` frames. The contour background is rendered once and
restored for each frame; only the paths, heads and step counter are redrawn (blitting), which keeps
a frame at a few milliseconds.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from ravine.surfaces import Surface, Window
from ravine.viz.plots import (
    DEFAULT_SIZE,
    Style,
    _legend,
    _title,
    check_size,
    clip_diverged,
    draw_contours,
    level_label,
    new_figure,
    output_format,
    set_title,
    styles,
)
from ravine.viz.trajectory import Trajectory

ANIMATION_FORMATS = ("gif", "mp4")
#: Colours of the markers drawn on every frame (minimum star, start dot, saddle cross, edges).
MARKER_COLOURS = ("gold", "black", "white")


class MissingFFmpegError(RuntimeError):
    """MP4 was asked for and no ffmpeg was found (PATH or imageio-ffmpeg)."""


#: Frames are held in memory until written: bound their total size (a frame is W * H * 3 bytes).
MAX_FRAME_BYTES = 2**30


def frame_steps(steps: int, stride: int) -> list[int]:
    """The step shown by each frame: stride, 2*stride, ..., and ``steps`` last."""
    if not isinstance(stride, int) or isinstance(stride, bool) or stride < 1:
        raise ValueError(f"stride={stride!r}: expected a positive integer")
    return [min((i + 1) * stride, steps) for i in range(-(-steps // stride))]


def check_animation(steps: int, stride: int, fps: int, size: Sequence[int]) -> None:
    """Refuse an animation whose frames would not fit in ``MAX_FRAME_BYTES``, or a bad fps.

    Cheap, so callers (``ravine viz``) run it before computing any trajectory.
    """
    if not isinstance(stride, int) or isinstance(stride, bool) or stride < 1:
        raise ValueError(f"stride={stride!r}: expected a positive integer")
    if not isinstance(fps, int) or isinstance(fps, bool) or not 1 <= fps <= 100:
        raise ValueError(f"fps={fps!r}: expected an integer from 1 to 100")
    width, height = check_size(size)
    frames = -(-steps // stride)
    if frames * width * height * 3 > MAX_FRAME_BYTES:
        most = MAX_FRAME_BYTES // (width * height * 3)
        raise ValueError(
            f"steps={steps} at stride={stride} makes {frames} frames of {width}x{height}; "
            f"expected at most {most} frames at that size ({MAX_FRAME_BYTES >> 20} MiB): "
            f"raise the stride to {-(-steps // most)} or more, or lower steps or size"
        )


def render_frames(
    trajectories: Sequence[Trajectory],
    surface: Surface | None = None,
    *,
    stride: int = 1,
    size: tuple[int, int] = DEFAULT_SIZE,
    title: str | None = None,
    window: Window | None = None,
    style: Sequence[Style] | None = None,
) -> Iterator[np.ndarray]:
    """Yield RGB frames (``height x width x 3`` uint8) of the optimizers racing."""
    if not trajectories:
        raise ValueError("trajectories=[]: expected at least one trajectory to animate")
    surface = surface or trajectories[0].surface
    steps = max(t.steps for t in trajectories)
    shown = frame_steps(steps, stride)

    fig = new_figure(size)
    ax = fig.add_subplot()
    filled = draw_contours(ax, surface, window=window)
    ax.set_aspect("equal", adjustable="box")
    set_title(ax, _title(surface, trajectories, title))
    win = ax.get_xlim() + ax.get_ylim()
    paths = [clip_diverged(t, win) for t in trajectories]
    lines, heads, crosses = [], [], []
    for traj, (color, ls) in zip(trajectories, style or styles(len(trajectories))):
        label = f"{traj.label} (diverged)" if traj.diverged else traj.label
        (line,) = ax.plot([], [], ls, color=color, lw=1.8, label=label, zorder=6, animated=True)
        (head,) = ax.plot(
            [], [], "o", color=color, mec="black", mew=0.6, ms=7, zorder=7, animated=True
        )
        (cross,) = ax.plot(
            [], [], "X", color=color, mec="black", ms=11, zorder=8, clip_on=False, animated=True
        )
        lines.append(line)
        heads.append(head)
        crosses.append(cross)
    x0, y0 = trajectories[0].points[0]
    ax.plot(x0, y0, "o", color="black", ms=7, zorder=9, label="start")
    _legend(ax, colorbar=(filled, level_label(surface)))
    counter = ax.text(
        0.02,
        0.97,
        "",
        transform=ax.transAxes,
        va="top",
        fontsize=10,
        bbox={"boxstyle": "round", "fc": "white", "ec": "0.6", "alpha": 0.9},
        zorder=10,
        animated=True,
    )
    canvas = fig.canvas
    canvas.draw()
    background = canvas.copy_from_bbox(fig.bbox)  # type: ignore[attr-defined]
    for step in shown:
        canvas.restore_region(background)  # type: ignore[attr-defined]
        for pts, traj, line, head, cross in zip(paths, trajectories, lines, heads, crosses):
            seen = pts[: step + 1]
            line.set_data(seen[:, 0], seen[:, 1])
            ended = traj.diverged and step >= len(pts) - 1
            (cross if ended else head).set_data(seen[-1:, 0], seen[-1:, 1])
            ax.draw_artist(line)
            ax.draw_artist(cross if ended else head)
        counter.set_text(f"step {step}")
        ax.draw_artist(counter)
        rgba = np.asarray(canvas.buffer_rgba())  # type: ignore[attr-defined]
        yield rgba[..., :3].copy()


def _shared_palette(last: Image.Image, exact: Sequence[str]) -> Image.Image:
    """One palette for every frame: the last frame's (it holds every path) plus ``exact``
    colours kept exact, so a path's colour or the gold star never drifts to a neighbour's."""
    from matplotlib.colors import to_rgb

    fixed = sorted({tuple(round(255 * c) for c in to_rgb(col)) for col in exact})[:64]
    base = last.quantize(colors=255 - len(fixed), method=Image.Quantize.MEDIANCUT)
    rgb = (base.getpalette() or [])[: 3 * (255 - len(fixed))]
    rgb += [v for colour in fixed for v in colour]
    palette = Image.new("P", (1, 1))
    palette.putpalette(rgb + [0, 0, 0] * (256 - len(rgb) // 3))
    return palette


def save_gif(
    frames: Sequence[np.ndarray],
    path: str | Path,
    *,
    fps: int = 20,
    hold_ms: int = 1500,
    exact: Sequence[str] = (),
) -> Path:
    """Write frames as a looping GIF through Pillow, one shared palette for all frames (sharing it
    avoids palette flicker between frames and is faster than quantizing each frame freely);
    ``exact`` colours (matplotlib colour specs) are reproduced exactly."""
    if not frames:
        raise ValueError("frames=[]: expected at least one frame")
    images = [Image.fromarray(f) for f in frames]
    palette = _shared_palette(images[-1], exact)
    quantized = [im.quantize(palette=palette, dither=Image.Dither.NONE) for im in images]
    durations = [max(1, round(1000 / fps))] * len(quantized)
    durations[-1] += hold_ms
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    quantized[0].save(
        path, save_all=True, append_images=quantized[1:], duration=durations, loop=0, optimize=True
    )
    return path


def ffmpeg_path() -> str | None:
    """ffmpeg on PATH, else the static build shipped in the imageio-ffmpeg wheel (pinned)."""
    found = shutil.which("ffmpeg")
    if found is not None:
        return found
    try:
        import imageio_ffmpeg
    except ImportError:
        return None
    try:
        return imageio_ffmpeg.get_ffmpeg_exe()
    except RuntimeError:  # the wheel has no binary for this platform
        return None


def save_mp4(frames: Sequence[np.ndarray], path: str | Path, *, fps: int = 20) -> Path:
    """Pipe raw RGB frames to ffmpeg (H.264, yuv420p so common players open it)."""
    ffmpeg = ffmpeg_path()
    if ffmpeg is None:
        raise MissingFFmpegError(
            "format='mp4' needs ffmpeg (on PATH or from the imageio-ffmpeg package), and none "
            "was found; use format='gif'"
        )
    if not frames:
        raise ValueError("frames=[]: expected at least one frame")
    height, width = frames[0].shape[:2]
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    cmd = [
        ffmpeg,
        "-y",
        "-loglevel",
        "error",
        "-f",
        "rawvideo",
        "-pix_fmt",
        "rgb24",
        "-s",
        f"{width}x{height}",
        "-r",
        str(fps),
        "-i",
        "-",
        # yuv420p needs even dimensions: pad by one pixel where needed.
        "-vf",
        "pad=ceil(iw/2)*2:ceil(ih/2)*2",
        "-pix_fmt",
        "yuv420p",
        "-vcodec",
        "libx264",
        str(path),
    ]
    data = b"".join(np.ascontiguousarray(f).tobytes() for f in frames)
    result = subprocess.run(cmd, input=data, capture_output=True, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"ffmpeg failed ({result.returncode}): {result.stderr.decode().strip()}")
    return path


def animate(
    trajectories: Sequence[Trajectory],
    path: str | Path,
    *,
    fmt: str | None = None,
    stride: int = 1,
    fps: int = 20,
    size: tuple[int, int] = DEFAULT_SIZE,
    title: str | None = None,
    window: Window | None = None,
    style: Sequence[Style] | None = None,
) -> Path:
    """Render the race and save it as GIF or MP4 (from ``fmt`` or the file suffix)."""
    path = Path(path)
    fmt = output_format(path, fmt, ANIMATION_FORMATS)
    check_animation(max(t.steps for t in trajectories) if trajectories else 1, stride, fps, size)
    if fmt == "mp4" and ffmpeg_path() is None:
        raise MissingFFmpegError(
            "format='mp4' needs ffmpeg (on PATH or from the imageio-ffmpeg package), and none "
            "was found; use format='gif'"
        )
    frames = list(
        render_frames(
            trajectories, stride=stride, size=size, title=title, window=window, style=style
        )
    )
    if fmt == "gif":
        used = [c for c, _ in (style or styles(len(trajectories)))]
        return save_gif(frames, path, fps=fps, exact=[*used, *MARKER_COLOURS])
    return save_mp4(frames, path, fps=fps)

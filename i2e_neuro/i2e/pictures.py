"""Pictures of event streams: a PNG grid (matplotlib) and an animated GIF (PIL).

ON events are drawn green, OFF events magenta, on black; a pixel that fires both (impossible
for I2E, possible for other event sources) is white. The source image, when given, is the
first panel of the grid and sits beside every frame of the GIF.

Both writers take events ``[T, 2, H, W]`` (bool, torch or numpy; channel 0 ON, 1 OFF) and an
optional source image ``[H, W, 3]`` (or ``[H, W]``) uint8, and write atomically.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np

from i2e_neuro.atomic import atomic_path

ON_COLOUR = (0, 255, 0)
OFF_COLOUR = (255, 0, 255)


def _events(events: Any) -> np.ndarray:
    if hasattr(events, "detach"):
        events = events.detach().cpu().numpy()
    events = np.asarray(events)
    if events.ndim != 4 or events.shape[1] != 2:
        raise ValueError(f"events: expected one sample [T, 2, H, W], got shape {events.shape}")
    if events.dtype != np.bool_:
        raise TypeError(f"events: expected a bool array, got {events.dtype}")
    return events


def _image(image: Any, shape: tuple[int, int]) -> np.ndarray | None:
    if image is None:
        return None
    if hasattr(image, "detach"):
        image = image.detach().cpu().numpy()
    image = np.asarray(image)
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[:, :, 0]
    if image.ndim == 2:
        image = np.repeat(image[:, :, None], 3, axis=2)
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"image: expected uint8 [H, W, 3], got {image.dtype} {image.shape}")
    if image.shape[:2] != shape:
        raise ValueError(f"image: size {image.shape[:2]} differs from the events' {shape}")
    return image


def event_frames(events: Any, on_colour=ON_COLOUR, off_colour=OFF_COLOUR) -> np.ndarray:
    """RGB frames ``[T, H, W, 3]`` uint8 of the events: ON and OFF in two colours on black."""
    ev = _events(events)
    on, off = ev[:, 0, :, :, None], ev[:, 1, :, :, None]
    frames = on * np.asarray(on_colour, np.uint16) + off * np.asarray(off_colour, np.uint16)
    return np.minimum(frames, 255).astype(np.uint8)


def _upscale(frame: np.ndarray, factor: int) -> np.ndarray:
    return frame if factor == 1 else frame.repeat(factor, axis=0).repeat(factor, axis=1)


def save_gif(
    path: str | Path,
    events: Any,
    image: Any = None,
    duration_ms: int = 250,
    min_side: int = 128,
) -> Path:
    """Animated GIF, one frame per timestep (the source image beside each frame), looping.

    Small images are enlarged by an integer factor (nearest neighbour) until the short side is
    at least ``min_side`` pixels, so that 28x28 digits stay visible.
    """
    from PIL import Image

    path = Path(path)
    frames = event_frames(events)
    source = _image(image, frames.shape[1:3])
    factor = max(1, -(-min_side // min(frames.shape[1:3])))
    pictures = []
    for frame in frames:
        panel = (
            frame
            if source is None
            else np.concatenate(
                [source, np.full((frame.shape[0], 2, 3), 64, np.uint8), frame], axis=1
            )
        )
        pictures.append(Image.fromarray(_upscale(panel, factor)))
    with atomic_path(path) as tmp:
        pictures[0].save(
            tmp,
            format="GIF",
            save_all=True,
            append_images=pictures[1:],
            duration=duration_ms,
            loop=0,
            optimize=False,
        )
    return path


def save_grid(
    path: str | Path,
    events: Any,
    image: Any = None,
    title: str | None = None,
    step_names: Sequence[str] | None = None,
    panel_inches: float | None = None,
    dpi: int = 100,
) -> Path:
    """PNG: the source image (if given), then one panel per timestep, side by side.

    ``step_names`` labels the timesteps (e.g. the direction of each, ``"efghabcd"``). Panels are
    as wide as the image in pixels (1.5 to 3.2 inches at ``dpi``) unless ``panel_inches`` is given.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch

    path = Path(path)
    frames = event_frames(events)
    source = _image(image, frames.shape[1:3])
    panels = ([("image", source)] if source is not None else []) + [
        (
            f"t={t}"
            + (f" ({step_names[t]})" if step_names is not None and t < len(step_names) else ""),
            frame,
        )
        for t, frame in enumerate(frames)
    ]
    h, w = frames.shape[1:3]
    if panel_inches is None:
        panel_inches = min(3.2, max(1.5, 1.05 * w / dpi))
    fig = Figure(figsize=(panel_inches * len(panels), panel_inches * h / w + 0.7), dpi=dpi)
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    for ax, (label, picture) in zip(axes, panels):
        ax.imshow(picture, interpolation="nearest")
        ax.set_title(label, fontsize=8)
        ax.set_xticks([])
        ax.set_yticks([])
    fig.legend(
        handles=[
            Patch(color=np.asarray(ON_COLOUR) / 255, label="ON"),
            Patch(color=np.asarray(OFF_COLOUR) / 255, label="OFF"),
        ],
        loc="lower center",
        ncol=2,
        fontsize=8,
        frameon=False,
    )
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout(rect=(0, 0.08, 1, 1))
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=dpi, facecolor="white")
    return path

"""The conversion step of the demo: the sample photos -> event files, GIFs and PNG grids.

Kept apart from the command so that the whole-pipeline demo can call :func:`convert_samples`.
"""

from __future__ import annotations

import time
from pathlib import Path

SAMPLES = Path(__file__).resolve().parents[1] / "data" / "samples"


def sample_photos() -> list[Path]:
    """The photos shipped in ``i2e_neuro/data/samples`` (sorted)."""
    return sorted(SAMPLES.glob("*.jpg"))


def convert_samples(
    out_dir: Path,
    short_side: int | None = 224,
    ratio: float = 0.12,
    timesteps: int = 8,
    pictures: bool = True,
) -> list[dict]:
    """Convert each sample photo into ``out_dir/<name>.npz`` (+ ``.gif`` and ``.png``).

    Photos are resized (bilinear) so that the short side is ``short_side`` pixels; None keeps
    their size. Returns one dict per photo: name, height, width, events, event_rate, on_rate,
    off_rate, rate_per_step (list), convert_ms, files (name -> path).
    """
    import numpy as np
    import torch

    from i2e_neuro.datasets.formats import save_events
    from i2e_neuro.i2e.conversion import i2e
    from i2e_neuro.i2e.directions import PAPER_ORDER
    from i2e_neuro.i2e.images import load_image, resize
    from i2e_neuro.i2e.pictures import save_gif, save_grid

    out_dir = Path(out_dir)
    rows = []
    for path in sample_photos():
        image = load_image(path)
        if short_side is not None:
            image = resize(image, (short_side,))
        x = torch.from_numpy(image).permute(2, 0, 1)[None]
        start = time.perf_counter()
        events = i2e(x, ratio=ratio, timesteps=timesteps)
        ms = (time.perf_counter() - start) * 1e3
        sample = events[:, 0]
        files = {
            "events": save_events(
                out_dir / f"{path.stem}.npz",
                events,
                labels=np.array([-1]),
                meta={"name": path.stem, "source": path.name, "ratio": ratio},
            )
        }
        if pictures:
            files["gif"] = save_gif(out_dir / f"{path.stem}.gif", sample, image)
            files["png"] = save_grid(
                out_dir / f"{path.stem}.png",
                sample,
                image,
                title=f"{path.stem}: I2E, ratio {ratio}",
                step_names="".join(PAPER_ORDER[:timesteps]),
            )
        per_pixel = sample[0, 0].numel()
        rows.append(
            {
                "name": path.stem,
                "height": image.shape[0],
                "width": image.shape[1],
                "events": int(sample.sum()),
                "event_rate": float(sample.float().mean()),
                "on_rate": float(sample[:, 0].float().mean()),
                "off_rate": float(sample[:, 1].float().mean()),
                "rate_per_step": [
                    float(sample[t].sum()) / (2 * per_pixel) for t in range(timesteps)
                ],
                "convert_ms": ms,
                "files": {k: str(v) for k, v in files.items()},
            }
        )
    return rows


def format_table(rows: list[dict]) -> str:
    """A plain-text table of :func:`convert_samples`' rows."""
    lines = [f"{'photo':<12}{'size':>10}{'events':>10}{'rate':>8}{'ON':>8}{'OFF':>8}{'ms':>8}"]
    for r in rows:
        lines.append(
            f"{r['name']:<12}{str(r['height']) + 'x' + str(r['width']):>10}{r['events']:>10}"
            f"{100 * r['event_rate']:>7.2f}%{100 * r['on_rate']:>7.2f}%{100 * r['off_rate']:>7.2f}%{r['convert_ms']:>8.2f}"
        )
    return "\n".join(lines)

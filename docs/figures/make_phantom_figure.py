"""Draw docs/figures/phantom.png: phantom slices of each modality with label contours.

Run from the repository root: ``python docs/figures/make_phantom_figure.py [--size 96]``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from dafnet.data.phantom import PhantomDataSource

CONTOURS = (  # (label values inside the contour, colour): endocardium, epicardium, RV
    ((1,), "#ff4040"),
    ((1, 2), "#40ff40"),
    ((3,), "#4090ff"),
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--size", type=int, default=96, help="image size in pixels")
    parser.add_argument("--subjects", type=int, nargs="+", default=[0, 8], help="subject indices")
    parser.add_argument("--columns", type=int, default=5, help="slices shown per stack")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path(__file__).with_name("phantom.png"))
    parser.add_argument("--no-contours", action="store_true")
    args = parser.parse_args()

    modalities = ("cine", "lge", "t2")
    params = PhantomDataSource.Params(subjects=max(args.subjects) + 1, image_size=args.size,
                                      modalities=modalities, seed=args.seed)
    source = PhantomDataSource(params)
    rows = [(i, m) for i in args.subjects for m in modalities]
    fig, axes = plt.subplots(len(rows), args.columns,
                             figsize=(1.6 * args.columns, 1.6 * len(rows)), squeeze=False)
    for row, (index, name) in zip(axes, rows):
        volume = source.subject(index).volumes[name]
        picks = np.linspace(0, volume.num_slices - 1, args.columns).round().astype(int)
        for ax, s in zip(row, picks):
            ax.imshow(volume.image[s], cmap="gray", vmin=-1, vmax=1, interpolation="nearest")
            if not args.no_contours:
                for values, colour in CONTOURS:
                    mask = np.isin(volume.label[s], values)
                    if mask.any():
                        ax.contour(mask, levels=[0.5], colors=colour, linewidths=0.6)
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_title(f"z={volume.slice_positions[s]:.0f} mm", fontsize=6, pad=2)
        row[0].set_ylabel(f"phantom_{index:03d}\n{name}", fontsize=7)
    fig.suptitle(f"dafnet phantom, {args.size} px (contours: endocardium red, epicardium green, RV blue)",
                 fontsize=8)
    fig.tight_layout(pad=0.3, rect=(0, 0, 1, 0.975))
    fig.savefig(args.out, dpi=150)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()

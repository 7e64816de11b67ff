"""bin/correlate's table (correlations.md) and scatter plots (scatter_<descriptor>.png)."""

import io
import os

from m3bert_tf.io import storage

# The descriptors bin/correlate computes (`correlate.descriptors` returns them
# in this order) and the encoders it compares: the table's rows and columns.
DESCRIPTORS = (
    "spectral_centroid", "spectral_bandwidth", "spectral_rolloff", "spectral_flux",
    "spectral_flatness", "zero_crossing_rate", "rms", "harmonic_ratio", "percussive_ratio",
)  # fmt: skip
SOURCES = ("model", "random", "input")

SOURCE_NAMES = {
    "model": "encoder",
    "random": "random-weight encoder",
    "input": "best input channel",
}


def _where(row: dict) -> str:
    if row["source"] == "input":
        return row["cell"]
    return f"layer {row['layer']} cell {row['cell']}"


def markdown(
    best: dict, config, files: int, frames: int, skipped: list, per_layer=None
) -> str:
    """Best |ρ| per descriptor for each source, side by side."""
    lines = [
        "# Correlations of encoder cells with audio descriptors",
        "",
        f"Model {config.model}; {files} files, {frames} encoder frames. Pearson's ρ over "
        "every frame; the cell of largest |ρ| per descriptor.",
        "",
        "| descriptor | " + " | ".join(SOURCE_NAMES[s] for s in SOURCES) + " |",
        "|" + " --- |" * (len(SOURCES) + 1),
    ]
    for d in DESCRIPTORS:
        cells = [f"{best[s][d]['rho']:+.3f} ({_where(best[s][d])})" for s in SOURCES]
        lines.append(f"| {d} | " + " | ".join(cells) + " |")
    if per_layer:
        lines += ["", "Best |ρ| per encoder layer (any cell, any descriptor):", ""]
        lines += ["| layer | " + " | ".join(SOURCE_NAMES[s] for s in per_layer) + " |"]
        lines += ["|" + " --- |" * (len(per_layer) + 1)]
        for i in range(len(next(iter(per_layer.values())))):
            cells = [
                f"{c[i]['rho']:+.3f} (cell {c[i]['cell']}, {c[i]['descriptor']})"
                for c in per_layer.values()
            ]
            lines.append(f"| {i} | " + " | ".join(cells) + " |")
    if skipped:
        lines += ["", f"Skipped {len(skipped)} files:", ""] + [f"- {s}" for s in skipped]
    return "\n".join(lines) + "\n"


def scatter(descriptor: str, best: dict, sums: dict, output_dir: str) -> str:
    """One figure per descriptor: its best cell of each source against it."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    d = DESCRIPTORS.index(descriptor)
    fig, axes = plt.subplots(1, len(SOURCES), figsize=(4.2 * len(SOURCES), 3.6))
    for ax, source in zip(axes, SOURCES, strict=True):
        row = best[source][descriptor]
        x, y = sums[source].sample()
        ax.scatter(y[:, d], x[:, row["index"]], s=3, alpha=0.4)
        ax.set_xlabel(descriptor)
        ax.set_ylabel(_where(row))
        ax.set_title(f"{SOURCE_NAMES[source]}: ρ = {row['rho']:+.3f}", fontsize=10)
    fig.tight_layout()
    path = os.path.join(output_dir, f"scatter_{descriptor}.png")
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110)
    plt.close(fig)
    storage.write_atomic(path, buffer.getvalue())
    return path

"""bin/evaluate's plots: a bar chart per task (plot_<task>.png), the layer
profile (layers_<task>.png) and the learning curve (curve_<task>.png), each
main score with its 95 % interval and the audio-blind chance line."""

import io

import numpy as np

from m3bert_tf.evaluate.scores import chosen_on_valid
from m3bert_tf.io import storage


def _main(spec: dict) -> str:
    return {"classification": "accuracy", "multilabel": "ROC-AUC macro"}.get(
        spec["kind"], "mean R²"
    )


def _save(fig, path: str) -> None:
    import matplotlib.pyplot as plt

    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=120)
    plt.close(fig)
    storage.write_atomic(path, buffer.getvalue())


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_task(task: str, r: dict, path: str) -> None:
    """Bar chart of the main score per feature set (one bar per probe), with
    its 95 % interval and chance marked."""
    plt = _pyplot()
    sets = list(dict.fromkeys(row["set"] for row in r["rows"]))
    probes = list(dict.fromkeys(row["probe"] for row in r["rows"]))
    width = 0.8 / len(probes)
    kind = r["spec"]["kind"]
    fig, ax = plt.subplots(figsize=(max(4.0, 1.2 * len(sets) + 1.5), 3.6))
    for j, name in enumerate(probes):
        values = {row["set"]: row for row in r["rows"] if row["probe"] == name}
        x = np.arange(len(sets)) + (j - (len(probes) - 1) / 2) * width
        ax.bar(
            x, [values[s]["mean"]["score"] for s in sets], width,
            yerr=_error_bars(values, sets), capsize=3, label=name,
        )  # fmt: skip
    if kind == "regression":  # an R² far below 0 would squash the rest
        ax.set_ylim(bottom=max(ax.get_ylim()[0], min(-1.0, r["chance"] - 0.1)))
    ax.axhline(r["chance"], color="k", linestyle="--", linewidth=1, label="chance")
    ax.set_xticks(np.arange(len(sets)), sets, rotation=20, ha="right", fontsize=8)
    ax.set_ylabel(
        {"classification": "accuracy", "multilabel": "ROC-AUC macro"}.get(kind, "mean R²")
    )
    ax.set_title(f"{task}: test score, mean and 95 % interval")
    ax.legend(fontsize=8)
    _save(fig, path)


def _error_bars(values: dict, sets: list) -> np.ndarray:
    """[2, sets] distances from each mean down and up to its interval's ends."""
    means = np.array([values[s]["mean"]["score"] for s in sets])
    bounds = np.array([values[s].get("interval", [np.nan, np.nan]) for s in sets]).T
    return np.abs(bounds - means)


def plot_layers(task: str, r: dict, path: str) -> None:
    """The layer profile: per profile and probe, the main score and its 95 %
    interval for every block, their mean and their learned weighted sum; below,
    the weighted rows' learned layer weights."""
    plt = _pyplot()
    rows = [row for row in r["rows"] if row.get("profile")]
    keys = list(dict.fromkeys((row["profile"], row["probe"]) for row in rows))
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(7, 6), height_ratios=[2, 1])
    for profile, kind in keys:
        mine = [row for row in rows if (row["profile"], row["probe"]) == (profile, kind)]
        means = np.array([row["mean"]["score"] for row in mine])
        bounds = np.array([row["interval"] for row in mine]).T
        top.errorbar(
            [row["layer"] for row in mine], means, yerr=np.abs(bounds - means),
            marker="o", capsize=3, label=f"{profile} ({kind})",
        )  # fmt: skip
        weighted = next((row for row in mine if "layer_weights" in row), None)
        if weighted is not None:
            w = weighted["layer_weights"]
            bottom.plot(
                [f"L{i}" for i in range(len(w))], w, marker="s", label=f"{profile} ({kind})"
            )
    top.axhline(r["chance"], color="k", linestyle="--", linewidth=1, label="chance")
    top.set_ylabel(_main(r["spec"]))
    top.set_title(f"{task}: test score per layer, mean and 95 % interval")
    top.legend(fontsize=8)
    bottom.set_ylabel("learned weight")
    bottom.set_title("the weighted rows' layer weights (softmax, trained with the probe)")
    _save(fig, path)


def plot_curve(task: str, r: dict, path: str) -> None:
    """The learning curve: per pretraining run, the test score (probe chosen
    on validation) and its 95 % interval against the step of each encoder
    snapshot; the baselines as horizontal lines (same pooling, same probes)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4))
    curves = list(dict.fromkeys(row["curve"] for row in r["rows"] if row.get("curve")))
    for curve in curves:
        points = {}
        for row in r["rows"]:
            if row.get("curve") == curve and not row.get("profile"):
                points.setdefault(row["step"], []).append(row)
        steps = sorted(points)
        best = [chosen_on_valid(points[s]) for s in steps]
        means = np.array([row["mean"]["score"] for row in best])
        bounds = np.array([row["interval"] for row in best]).T
        ax.errorbar(steps, means, yerr=np.abs(bounds - means), marker="o", capsize=3,
                    label=curve)  # fmt: skip
    baselines = dict.fromkeys(
        row["set"] for row in r["rows"] if row.get("kind") == "baseline"
    )
    for number, name in enumerate(baselines):
        row = chosen_on_valid([x for x in r["rows"] if x["set"] == name])
        ax.axhline(row["mean"]["score"], color=f"C{len(curves) + number}", linewidth=1,
                   linestyle=":", label=f"{name} ({row['pooling']})")  # fmt: skip
    ax.axhline(r["chance"], color="k", linestyle="--", linewidth=1, label="chance")
    ax.set_xlabel("pretraining step")
    ax.set_ylabel(_main(r["spec"]))
    ax.set_title(f"{task}: test score against pretraining step (95 % intervals)")
    ax.legend(fontsize=8)
    _save(fig, path)

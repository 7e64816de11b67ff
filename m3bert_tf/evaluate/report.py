"""bin/evaluate's outputs: results.json, results.md (one table per task, as the
paper's Tables 6-10) and one bar chart per task (plot_<task>.png)."""

import collections
import io
import os

from m3bert_tf import runs, storage

METRIC_NAMES = {
    "accuracy": "accuracy",
    "roc_auc_macro": "ROC-AUC",
    "pr_auc_macro": "PR-AUC",
}


def _metric_name(key: str) -> str:
    return METRIC_NAMES.get(key, key.replace("r2_", "R² "))


def _columns(rows: list[dict]) -> list[str]:
    keys = []
    for row in rows:
        keys += [k for k in row["mean"] if k != "score" and k not in keys]
    return keys


def _chosen(row: dict) -> str:
    """The hyper-parameters chosen most often over the seeds."""
    from m3bert_tf.evaluate.probe import HyperParams

    picks = collections.Counter(
        HyperParams(**s["chosen"]).describe() for s in row["seeds"]
    ).most_common(1)
    return f"{picks[0][0]} ({picks[0][1]}/{len(row['seeds'])})"


def markdown(results: dict) -> str:
    """One table per task: rows = feature set x probe, columns = test metrics
    (mean ± std over seeds), and the chance row."""
    out = ["# Probe results", ""]
    settings = results.get("settings", {})
    out.append(
        f"Test-split scores, mean ± std over {settings.get('seeds', '?')} seeds; "
        "probe hyper-parameters and epoch chosen on the validation split."
    )
    for task, r in results["tasks"].items():
        spec = r["spec"]
        unit = (
            "tracks (chunk predictions averaged per track)"
            if r["per"] == "track"
            else "examples"
        )
        out += ["", f"## {task} ({spec['kind']}, {r['test_examples']} test {unit})", ""]
        columns = _columns(r["rows"])
        out.append(
            "| feature set | probe | dim | "
            + " | ".join(map(_metric_name, columns))
            + " | chosen on valid |"
        )
        out.append("|" + " --- |" * (len(columns) + 4))
        for row in r["rows"]:
            cells = [f"{row['mean'][k]:.3f} ± {row['std'][k]:.3f}" for k in columns]
            out.append(
                f"| {row['set']} | {row['probe']} | {row['dim']} | "
                + " | ".join(cells)
                + f" | {_chosen(row)} |"
            )
        main = (
            "accuracy"
            if spec["kind"] == "classification"
            else ("ROC-AUC" if spec["kind"] == "multilabel" else "mean R²")
        )
        out.append(
            f"| chance (audio-blind) | | | {main} {r['chance']:.3f} |" + " |" * len(columns)
        )
    for task, why in results.get("skipped", {}).items():
        out += ["", f"## {task}: not probed ({why})"]
    sets = results.get("feature_sets", {})
    if sets:
        out += ["", "Feature sets:", ""]
        out += [f"- {name}: {what}" for name, what in sets.items()]
    return "\n".join(out) + "\n"


def plot_task(task: str, r: dict, path: str) -> None:
    """Bar chart of the main score per feature set (one bar per probe), with
    the spread over seeds and chance marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

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
            yerr=[values[s]["std"]["score"] for s in sets], capsize=3, label=name,
        )  # fmt: skip
    if kind == "regression":  # an R² far below 0 would squash the rest
        ax.set_ylim(bottom=max(ax.get_ylim()[0], min(-1.0, r["chance"] - 0.1)))
    ax.axhline(r["chance"], color="k", linestyle="--", linewidth=1, label="chance")
    ax.set_xticks(np.arange(len(sets)), sets, rotation=20, ha="right", fontsize=8)
    ax.set_ylabel(
        {"classification": "accuracy", "multilabel": "ROC-AUC macro"}.get(kind, "mean R²")
    )
    ax.set_title(f"{task}: test score, mean ± std over seeds")
    ax.legend(fontsize=8)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=120)
    plt.close(fig)
    storage.write_atomic(path, buffer.getvalue())


def write(results: dict, output_dir: str) -> None:
    """results.json, results.md and plot_<task>.png, each written atomically."""
    runs.write_json(os.path.join(output_dir, "results.json"), results)
    text = markdown(results)
    storage.write_atomic(os.path.join(output_dir, "results.md"), text)
    for task, r in results["tasks"].items():
        plot_task(task, r, os.path.join(output_dir, f"plot_{task}.png"))

"""bin/evaluate's outputs: results.json, results.md (one table per task, as the
paper's Tables 6-10) and the plots of `plots.py`."""

import collections
import os

import numpy as np

from m3bert_tf.evaluate import plots
from m3bert_tf.evaluate.scores import chosen_on_valid
from m3bert_tf.io import storage
from m3bert_tf.tasks.metrics import number

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


def _interval(row: dict) -> str:
    low, high = row.get("interval", (float("nan"), float("nan")))
    return f"[{number(low)}, {number(high)}]"


def _chosen_probe(rows: list[dict], feature_set: str) -> dict:
    """A feature set's row whose probe has the best mean validation score."""
    return chosen_on_valid([r for r in rows if r["set"] == feature_set])


def summary(results: dict) -> list[str]:
    """The paper-shaped table: a row per feature set, a column per task (main
    score and 95 % interval of the probe chosen on validation); best in bold."""
    tasks = list(results["tasks"])
    sets = list(dict.fromkeys(r["set"] for t in tasks for r in results["tasks"][t]["rows"]))
    chosen = {
        (t, fs): _chosen_probe(results["tasks"][t]["rows"], fs)
        for t in tasks for fs in sets
        if any(r["set"] == fs for r in results["tasks"][t]["rows"])
    }  # fmt: skip
    best = {
        t: max(
            (chosen[t, fs]["mean"]["score"] for fs in sets if (t, fs) in chosen),
            key=lambda v: v if np.isfinite(v) else -np.inf,
        )
        for t in tasks
    }
    out = [
        "| feature set | pooling | dim | "
        + " | ".join(f"{t} ({_main(results['tasks'][t]['spec'])})" for t in tasks)
        + " |"
    ]
    out.append("|" + " --- |" * (len(tasks) + 3))
    for fs in sets:
        first = next(chosen[t, fs] for t in tasks if (t, fs) in chosen)
        cells = []
        for t in tasks:
            row = chosen.get((t, fs))
            if row is None:
                cells.append("")
                continue
            score = row["mean"]["score"]
            text = f"{number(score)} {_interval(row)} ({row['probe']})"
            cells.append(f"**{text}**" if np.isfinite(score) and score == best[t] else text)
        out.append(
            f"| {fs} | {first.get('pooling', '')} | {first['dim']} | "
            + " | ".join(cells)
            + " |"
        )
    return out


def _main(spec: dict) -> str:
    kind = spec["kind"]
    return (
        "accuracy"
        if kind == "classification"
        else "ROC-AUC"
        if kind == "multilabel"
        else "mean R²"
    )


def comparison_lines(r: dict) -> list[str]:
    """One line per paired comparison of a task."""
    out = []
    for c in r.get("comparisons", []):
        low, high = c["interval"]
        verdict = "**resolved**" if c["resolved"] else "not resolved"
        out.append(
            f"- {c['a']} − {c['b']} ({c['probe']}): {c['difference']:+.3f} "
            f"[{low:+.3f}, {high:+.3f}], p = {c['p']:.3f}: {verdict}"
        )
    return out


def sentences(results: dict) -> list[str]:
    """Per task and feature set, in words: against the best baseline, under
    the probe chosen on validation, with its interval, resolved or not."""
    out = []
    for task, r in results["tasks"].items():
        for c in r.get("comparisons", []):
            if (
                not c.get("baseline")
                or c["probe"] != _chosen_probe(r["rows"], c["a"])["probe"]
            ):
                continue
            low, high = c["interval"]
            if c.get("added"):
                source = c["a"].removesuffix(f" + {c['b']}")
                verdict = "resolved" if c["resolved"] else "not resolved"
                out.append(
                    f"{task}: {source} joined to {c['b']} against {c['b']} alone: "
                    f"{c['difference']:+.3f} [{low:+.3f}, {high:+.3f}], {verdict} "
                    f"(what it adds to its input's statistics; {c['probe']} probe)"
                )
            elif c["resolved"]:
                verb = "beats" if c["difference"] > 0 else "is beaten by"
                if c["difference"] < 0:  # the margin and its interval as positive numbers
                    low, high = -high, -low
                out.append(
                    f"{task}: {c['a']} {verb} {c['b']} by {abs(c['difference']):.3f} "
                    f"[{low:.3f}, {high:.3f}] ({c['probe']} probe)"
                )
            else:
                out.append(
                    f"{task}: {c['a']} against {c['b']}: {c['difference']:+.3f} "
                    f"[{low:+.3f}, {high:+.3f}], not resolved on {r['test_examples']} "
                    f"test units ({c['probe']} probe)"
                )
    return out


def markdown(results: dict) -> str:
    """The summary table, then one table per task: rows = feature set x
    probe, columns = test metrics (mean ± std over seeds) and the main
    score's 95 % interval, the chance row and the paired comparisons."""
    out = ["# Probe results", ""]
    settings = results.get("settings", {})
    folds = f"{settings['folds']} folds x " if settings.get("folds") else ""
    out.append(
        f"Test-split scores, mean ± std over {folds}{settings.get('seeds', '?')} seeds; "
        "probe hyper-parameters and epoch chosen on the validation split. Intervals: "
        "95 %, a bootstrap over test units paired across feature sets, with the seeds "
        "(docs/evaluate.md). Every set with frames is pooled alike "
        f"({settings.get('pooling', '?')} over time); a row `A + B` is A's embedding "
        "joined to the raw baseline B, compared with B alone."
        + (
            " With folds, the summary's scores, the intervals, the paired differences and "
            "the audio-blind score are those of the pooled out-of-fold predictions; the "
            "task tables' metric columns are means over folds and seeds."
            if settings.get("folds")
            else ""
        )
    )
    if results["tasks"]:
        out += ["", "## Summary", ""] + summary(results)
        lines = sentences(results)
        if lines:
            out += [""] + [f"- {line}" for line in lines]
    for task, r in results["tasks"].items():
        spec = r["spec"]
        unit = (
            "tracks (chunk predictions averaged per track)"
            if r["per"] == "track"
            else "examples"
        )
        pooled = (
            f", every one tested once over {r['folds']} folds" if r.get("folds") else ""
        )
        out += [
            "",
            f"## {task} ({spec['kind']}, {r['test_examples']} test {unit}{pooled})",
            "",
        ]
        columns = _columns(r["rows"])
        out.append(
            "| feature set | probe | pooling | dim | "
            + " | ".join(map(_metric_name, columns))
            + " | 95 % interval | chosen on valid |"
        )
        out.append("|" + " --- |" * (len(columns) + 6))
        for row in r["rows"]:
            cells = [f"{number(row['mean'][k])} ± {number(row['std'][k])}" for k in columns]
            out.append(
                f"| {row['set']} | {row['probe']} | {row.get('pooling', '')} | {row['dim']} | "
                + " | ".join(cells)
                + f" | {_interval(row)} | {_chosen(row)} |"
            )
        main = (
            "accuracy"
            if spec["kind"] == "classification"
            else ("ROC-AUC" if spec["kind"] == "multilabel" else "mean R²")
        )
        out.append(
            f"| chance (audio-blind) | | | | {main} {number(r['chance'])} |"
            + " |" * (len(columns) + 1)
        )
        for row in r["rows"]:
            if "layer_weights" in row:
                weights = ", ".join(
                    f"L{i} {w:.2f}" for i, w in enumerate(row["layer_weights"])
                )
                out += [
                    "",
                    f"Learned layer weights of {row['set']} ({row['probe']}): {weights}",
                ]
        lines = comparison_lines(r)
        if lines:
            out += [
                "",
                "Paired differences of the main score (95 % interval, one-sided p):",
                "",
            ]
            out += lines
    for task, why in results.get("skipped", {}).items():
        out += ["", f"## {task}: not probed ({why})"]
    sets = results.get("feature_sets", {})
    if sets:
        out += ["", "Feature sets:", ""]
        out += [f"- {name}: {what}" for name, what in sets.items()]
    return "\n".join(out) + "\n"


def write(results: dict, output_dir: str) -> None:
    """results.json, results.md, plot_<task>.png and, for a layer profile,
    layers_<task>.png, each written atomically."""
    storage.write_json(os.path.join(output_dir, "results.json"), results)
    text = markdown(results)
    storage.write_atomic(os.path.join(output_dir, "results.md"), text)
    for task, r in results["tasks"].items():
        plots.plot_task(task, r, os.path.join(output_dir, f"plot_{task}.png"))
        if any(row.get("profile") for row in r["rows"]):
            plots.plot_layers(task, r, os.path.join(output_dir, f"layers_{task}.png"))
        if any(row.get("curve") for row in r["rows"]):
            plots.plot_curve(task, r, os.path.join(output_dir, f"curve_{task}.png"))

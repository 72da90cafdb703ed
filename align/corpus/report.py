"""The corpus stats report: documents and characters in/out per stage, language and source, as
JSON (`report.json`), Markdown (`report.md`) and a bar chart (`report.png`)."""

from __future__ import annotations

import json
from pathlib import Path

from align.corpus.steps import write_json_atomic


def merge_counts(counts_dir: Path, stages: list[str]) -> dict:
    """Sum the per-task counts into per-stage totals, with breakdowns by language and source."""
    report: dict = {"stages": [], "by_language": {}, "by_source": {}}
    for stage in stages:
        total = {"stage": stage, "docs_in": 0, "chars_in": 0, "docs_out": 0, "chars_out": 0, "dropped": {}}
        for path in sorted(counts_dir.glob(f"{stage}-*.json")):
            data = json.loads(path.read_text(encoding="utf-8"))
            for lang, source, docs_in, chars_in, docs_out, chars_out in data["rows"]:
                for key, group in (("by_language", lang), ("by_source", source)):
                    row = report[key].setdefault(group, {}).setdefault(stage, [0, 0, 0, 0])
                    for i, v in enumerate((docs_in, chars_in, docs_out, chars_out)):
                        row[i] += v
                total["docs_in"] += docs_in
                total["chars_in"] += chars_in
                total["docs_out"] += docs_out
                total["chars_out"] += chars_out
            for reason, n in data["reasons"].items():
                total["dropped"][reason] = total["dropped"].get(reason, 0) + n
        total["dropped"] = dict(sorted(total["dropped"].items(), key=lambda kv: -kv[1]))
        report["stages"].append(total)
    report["by_language"].pop("?", None)  # documents before language id; counted under their source
    return report


def _table(header: list[str], rows: list[list]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += [
        "| " + " | ".join(f"{v:,}" if isinstance(v, int) else str(v) for v in row) + " |" for row in rows
    ]
    return lines


def write_report(report: dict, out_dir: Path) -> None:
    """Write report.json, report.md and report.png into `out_dir`."""
    write_json_atomic(out_dir / "report.json", report)
    stages = [s["stage"] for s in report["stages"]]
    md = ["# Corpus report", "", "## Per stage", ""]
    md += _table(
        ["stage", "docs in", "docs out", "chars in", "chars out", "dropped (reason: docs)"],
        [[s["stage"], s["docs_in"], s["docs_out"], s["chars_in"], s["chars_out"],
          ", ".join(f"{r}: {n}" for r, n in s["dropped"].items()) or "-"] for s in report["stages"]],
    )  # fmt: skip
    after = stages[stages.index("language") :] if "language" in stages else stages
    zero = [0, 0, 0, 0]
    for key, title, columns in (
        ("by_language", "Per language (documents out of each stage)", after),
        ("by_source", "Per source (documents out of each stage)", stages),
    ):
        groups = sorted(report[key].items(), key=lambda kv: -kv[1].get(stages[-1], zero)[2])
        rows = [
            [g, *(per.get(s, zero)[2] for s in columns), per.get(stages[-1], zero)[3]] for g, per in groups
        ]
        md += ["", f"## {title}", "", *_table([key.removeprefix("by_"), *columns, "chars out"], rows)]
    (out_dir / "report.md").write_text("\n".join(md) + "\n", encoding="utf-8")
    _plot(report, out_dir / "report.png")


def _plot(report: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    stages = report["stages"]
    last = stages[-1]["stage"]
    langs = sorted(report["by_language"].items(), key=lambda kv: -kv[1].get(last, [0, 0, 0])[2])[:12]
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.5))
    xs = range(len(stages))
    left.bar([x - 0.2 for x in xs], [s["docs_in"] for s in stages], width=0.4, label="in")
    left.bar([x + 0.2 for x in xs], [s["docs_out"] for s in stages], width=0.4, label="out")
    left.set_xticks(list(xs), [s["stage"] for s in stages], rotation=30, ha="right")
    left.set_ylabel("documents")
    left.set_title("Documents per stage")
    left.legend()
    right.bar([lang for lang, _ in langs], [per.get(last, [0, 0, 0])[2] for _, per in langs])
    right.set_ylabel("documents kept")
    right.set_title("Kept documents per language")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)

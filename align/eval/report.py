"""`align eval report`: Markdown and LaTeX tables and bar charts from a saved results.json.

One table per benchmark that has categories or subjects (MMLU: Humanities, STEM, Social Science,
Other, Average, as in the seed's Table 4) and one overview table of every benchmark's headline
score. Rows are the evaluated checkpoints, then the reference rows (published numbers) of a YAML
file. In each column the best value is bold and the second best underlined, as in the seed.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from align.errors import InputError
from align.eval.config import ReportConfig

log = logging.getLogger(__name__)

AVERAGE = "Average"


@dataclass
class Table:
    """A score table: rows of models, columns of categories or benchmarks (None: not reported)."""

    name: str
    title: str
    columns: list[str]
    rows: dict[str, list[float | None]]
    higher_is_better: list[bool]
    errors: dict[str, list[float | None]] = field(default_factory=dict)
    """Standard errors of the rows' values, in points (published reference rows have none)."""

    def marks(self) -> dict[tuple[str, int], str]:
        """(row, column) -> 'best' or 'second', per column; ties share a mark."""
        marks = {}
        for j, higher in enumerate(self.higher_is_better):
            values = sorted({r[j] for r in self.rows.values() if r[j] is not None}, reverse=higher)
            for label, row in self.rows.items():
                if row[j] is not None and row[j] in values[:2]:
                    marks[label, j] = "best" if row[j] == values[0] else "second"
        return marks


def read_references(path: Path) -> dict[str, dict[str, dict[str, float]]]:
    """Reference rows: model -> benchmark -> {column title or 'overall': score in percent}."""
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as err:
        raise InputError(f"{path}: not valid YAML ({str(err).splitlines()[0]})") from None
    models = data.get("models")
    if not isinstance(models, dict):
        raise InputError(f"{path}: expected a 'models' mapping of model -> benchmark -> scores")
    return models


FIXTURES = Path(__file__).resolve().parents[2] / "tests" / "fixtures"


def benchmark_title(info: dict[str, Any], n: int | None) -> str:
    """A benchmark's title with what its scores rest on: "MMLU (demo fixture, 8 questions)"."""
    if n is None:
        return info["title"]
    location = info.get("location")
    fixture = location is not None and FIXTURES in Path(location).resolve().parents
    return f"{info['title']} ({'demo fixture, ' if fixture else ''}{n:,} questions)"


def build_tables(results: dict[str, Any], references: dict[str, dict[str, dict[str, float]]]) -> list[Table]:
    """The per-benchmark tables (those with columns) and the overview table."""
    scores = {label: model["scores"] for label, model in results["models"].items()}
    evaluated = list(scores)
    for label, benchmarks in references.items():
        scores.setdefault(label, {})
        for name, values in benchmarks.items():
            columns = {k: float(v) for k, v in values.items() if k != "overall"}
            overall = values.get("overall", values.get(AVERAGE))
            scores[label][name] = {"overall": None if overall is None else float(overall), "columns": columns}
    tables = []
    benchmarks = results["benchmarks"]
    for name, info in benchmarks.items():
        if not info["columns"]:
            continue
        rows, errors = {}, {}
        for label, by_bench in scores.items():
            entry = by_bench.get(name)
            # A reference row with no column of this table (GPT-4's MMLU is in Table 2 only) stays
            # in the overview.
            if entry is not None and (label in results["models"] or entry["columns"]):
                rows[label] = [entry["columns"].get(c) for c in info["columns"]] + [entry["overall"]]
                column_errors = entry.get("columns_stderr", {})
                errors[label] = [column_errors.get(c) for c in info["columns"]] + [entry.get("stderr")]
        higher = [info["higher_is_better"]] * (len(info["columns"]) + 1)
        counts = scores[evaluated[0]][name] if evaluated and name in scores[evaluated[0]] else {}
        titles = [
            f"{c} (n={counts['columns_n'][c]:,})" if c in counts.get("columns_n", {}) else c
            for c in info["columns"]
        ]
        title = benchmark_title(info, counts.get("n"))
        tables.append(Table(name, title, [*titles, AVERAGE], rows, higher, errors))
    names = list(benchmarks)
    overview = {
        label: [by_bench[n]["overall"] if n in by_bench else None for n in names]
        for label, by_bench in scores.items()
    }
    overview_errors = {
        label: [by_bench[n].get("stderr") if n in by_bench else None for n in names]
        for label, by_bench in scores.items()
    }
    higher = [benchmarks[n]["higher_is_better"] for n in names]
    first = scores[evaluated[0]] if evaluated else {}
    titles = [benchmark_title(benchmarks[n], first.get(n, {}).get("n")) for n in names]
    tables.append(Table("overview", "All benchmarks", titles, overview, higher, overview_errors))
    return tables


def _cell(value: float | None, mark: str | None, latex: bool, error: float | None = None) -> str:
    if value is None:
        return "--" if latex else "–"
    text = f"{value:.1f}"
    if mark == "best":
        text = rf"\textbf{{{text}}}" if latex else f"**{text}**"
    elif mark == "second":
        text = rf"\underline{{{text}}}" if latex else f"<u>{text}</u>"
    if error is not None:
        text += rf" $\pm$ {error:.1f}" if latex else f" ± {error:.1f}"
    return text


def to_markdown(table: Table) -> str:
    """A GitHub Markdown table: best **bold**, second <u>underlined</u>."""
    marks = table.marks()
    lines = [
        f"**{table.title}**",
        "",
        "| Model | " + " | ".join(table.columns) + " |",
        "|---|" + "---:|" * len(table.columns),
    ]
    for label, row in table.rows.items():
        errors = table.errors.get(label) or [None] * len(row)
        cells = [
            _cell(v, marks.get((label, j)), False, e)
            for j, (v, e) in enumerate(zip(row, errors, strict=True))
        ]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _latex_escape(text: str) -> str:
    for char, escaped in (
        ("\\", r"\textbackslash{}"),
        ("&", r"\&"),
        ("%", r"\%"),
        ("_", r"\_"),
        ("#", r"\#"),
    ):
        text = text.replace(char, escaped)
    return text


def to_latex(table: Table) -> str:
    """A LaTeX `table` (needs only the base LaTeX kernel): best \\textbf, second \\underline."""
    marks = table.marks()
    lines = [
        r"\begin{table}[t]",
        r"\centering",
        r"\begin{tabular}{l" + "r" * len(table.columns) + "}",
        r"\hline",
        "Model & " + " & ".join(_latex_escape(c) for c in table.columns) + r" \\",
        r"\hline",
    ]
    for label, row in table.rows.items():
        errors = table.errors.get(label) or [None] * len(row)
        cells = [
            _cell(v, marks.get((label, j)), True, e) for j, (v, e) in enumerate(zip(row, errors, strict=True))
        ]
        lines.append(_latex_escape(label) + " & " + " & ".join(cells) + r" \\")
    lines += [
        r"\hline",
        r"\end{tabular}",
        rf"\caption{{{_latex_escape(table.title)}}}",
        rf"\label{{tab:{table.name.replace('_', '-')}}}",
        r"\end{table}",
    ]
    return "\n".join(lines) + "\n"


def bar_chart(table: Table, path: Path) -> None:
    """A grouped bar chart: one group per column, one bar per model, ± one standard error."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = list(table.rows)
    width = 0.8 / max(len(labels), 1)
    fig, ax = plt.subplots(figsize=(max(6.0, 1.3 * len(table.columns) + 2), 4))
    for i, label in enumerate(labels):
        xs = [j + i * width for j in range(len(table.columns))]
        errors = [e if e is not None else 0.0 for e in table.errors.get(label) or [None] * len(xs)]
        values = [v if v is not None else 0.0 for v in table.rows[label]]
        ax.bar(xs, values, width, yerr=errors, capsize=2, label=label)
    ax.set_xticks([j + width * (len(labels) - 1) / 2 for j in range(len(table.columns))], table.columns)
    ax.set_ylabel("score (%)")
    ax.set_title(table.title)
    ax.legend(fontsize="small")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def render_report(config: ReportConfig) -> list[Path]:
    """Write `{name}.md`, `{name}.tex`, `{name}.png` per table and `report.md`; the paths written."""
    results = json.loads((config.output_dir / "results.json").read_text(encoding="utf-8"))
    reference_file = config.references or (Path(results["references"]) if results.get("references") else None)
    references = read_references(reference_file) if reference_file else {}
    tables = build_tables(results, references)
    if config.models:
        for table in tables:
            table.rows = {m: table.rows[m] for m in config.models if m in table.rows}
    out = config.output_dir / "tables"
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for table in tables:
        for suffix, text in ((".md", to_markdown(table)), (".tex", to_latex(table))):
            (out / f"{table.name}{suffix}").write_text(text, encoding="utf-8")
            written.append(out / f"{table.name}{suffix}")
        bar_chart(table, out / f"{table.name}.png")
        written.append(out / f"{table.name}.png")
    report = "\n".join(to_markdown(t) + f"\n![{t.title}](tables/{t.name}.png)\n" for t in tables)
    (config.output_dir / "report.md").write_text(report, encoding="utf-8")
    written.append(config.output_dir / "report.md")
    log.info("wrote %d tables to %s", len(tables), out)
    return written

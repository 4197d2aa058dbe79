"""The report's "Which differences are real" section (harness.report.sections.differences_section, placed by
harness.report.assembly.render_report): training noise first, then each pair, each label, how it was computed.

The significance dicts here follow significance.json's "comparison" schema; the verdict sentences come from a
stand-in passed as `sentences`, except where a test checks the real harness.report.verdicts.comparison_lines.
"""

from __future__ import annotations

import itertools
import json
import re
import shutil

import pytest

from conftest import REPO_ROOT, SMALL_RUN, run_harness
from harness.report.assembly import render_report, write_report
from harness.report.figures import PAIRED_RUNS, write_figures
from harness.report.sections import differences_section

CLAIM = re.compile(r"significant|better", re.IGNORECASE)
FIGURE = ("Every run, paired across workers", PAIRED_RUNS, "Dots: each run's test macro AUROC.")


def pair(a: str, b: str, runs_a: list[float], runs_b: list[float], verdict: str) -> dict:
    """One PAIR entry of the schema, its numbers from the runs (interval and p-values made up)."""
    differences = [x - y for x, y in zip(runs_a, runs_b, strict=True)]
    mean = sum(differences) / len(differences)
    several = len(differences) > 1
    return {"a": a, "b": b, "runs": len(differences), "mean_a": sum(runs_a) / len(runs_a),
            "mean_b": sum(runs_b) / len(runs_b), "difference": mean, "differences": differences,
            "run_sd": 0.004 if several else None, "test_sd": 0.006, "se": 0.005 if several else None,
            "df": len(differences) - 1 if several else None, "low": mean - 0.02 if several else None,
            "high": mean + 0.02 if several else None, "p": 0.01 if several else None,
            "p_holm": 0.03 if several else None, "p_equivalence": 0.2 if several else None,
            "p_equivalence_holm": 0.4 if several else None, "verdict": verdict,
            "runs_needed": 6, "runs_needed_note": "6 paired runs would show a difference of 0.01."}


def significance_fixture(runs: dict[str, list[float]], verdicts: dict[tuple[str, str], str],
                         folds: int = 1) -> dict:
    """significance.json with the "comparison" key; per label, Cardiomegaly repeats the macro verdicts and
    Hernia is undetermined for every pair."""
    names = list(runs)
    seeds = range(len(runs[names[0]]))
    workers = {name: {"runs": [{"seed": seed, "fold": None, "macro_auroc": value}
                               for seed, value in zip(seeds, values, strict=True)],
                      "mean": sum(values) / len(values),
                      "sd": 0.006 if len(values) > 1 else None, "min": min(values), "max": max(values)}
               for name, values in runs.items()}
    macro = [pair(a, b, runs[a], runs[b], verdicts[(a, b)]) for a, b in itertools.combinations(names, 2)]
    labels = [{**entry, "label": label, "verdict": entry["verdict"] if label == "Cardiomegaly" else "undetermined"}
              for entry in macro for label in ("Hernia", "Cardiomegaly")]
    return {
        "level": 0.95, "workers": {}, "notes": ["Intervals resample patients (1000 bootstrap replicates)."],
        "comparison": {
            "alpha": 0.05, "level": 0.95, "margin": 0.01,
            "fold_correction": {"folds": folds, "ratio": 0.5 if folds > 1 else None},
            "workers": workers, "macro": macro, "labels": labels,
            "notes": ["A worker's estimate is the mean over its runs; runs pair by training seed and fold."],
        },
    }


def stand_in_sentences(significance: dict) -> list[str]:
    """What comparison_lines is asked for: one sentence per pair, its verdict in words."""
    words = {"different": "the difference is real", "equivalent": "equivalent within ±0.01",
             "undetermined": "undetermined: the runs cannot tell"}
    return [f"{p['a']} vs {p['b']}: mean difference {p['difference']:+.3f}: {words[p['verdict']]}."
            for p in significance["comparison"]["macro"]]


THREE_RUNS = {"keras": [0.830, 0.842, 0.836], "pytorch": [0.829, 0.840, 0.833], "tensorflow": [0.801, 0.812, 0.806]}
THREE_VERDICTS = {("keras", "pytorch"): "equivalent", ("keras", "tensorflow"): "different",
                  ("pytorch", "tensorflow"): "undetermined"}
ONE_RUN = {"keras": [0.830], "pytorch": [0.805]}


def headings(lines: list[str]) -> list[str]:
    return [line for line in lines if line.startswith("#")]


def test_the_section_gives_training_noise_then_the_figure_then_pairs_then_labels_then_how():
    lines = differences_section(significance_fixture(THREE_RUNS, THREE_VERDICTS), FIGURE, stand_in_sentences)
    assert headings(lines) == ["### Training noise: each worker against itself",
                               "### Between workers: the mean difference over paired runs",
                               "### Per label", "### How this was computed"]
    text = "\n".join(lines)
    order = [text.index(part) for part in (
        "This spread is training noise: what a framework does against itself with the same data and different "
        "training seeds", "| worker | runs | mean macro AUROC | sd over runs | min–max |",
        f"![Every run, paired across workers]({PAIRED_RUNS})", "- keras vs pytorch: mean difference +0.002",
        "| label | pair | mean difference (a − b) | 95% interval | verdict |",
        "- A worker's estimate is the mean over its runs", "- Intervals resample patients")]
    assert order == sorted(order)


def test_training_noise_table_gives_each_workers_runs_mean_sd_and_range():
    lines = differences_section(significance_fixture(THREE_RUNS, THREE_VERDICTS), None, stand_in_sentences)
    assert "| keras | 3 | 0.836 | 0.006 | 0.830–0.842 |" in lines
    assert "| tensorflow | 3 | 0.806 | 0.006 | 0.801–0.812 |" in lines
    assert not any(line.startswith("![") for line in lines)  # no figure given, none placed


def test_pairs_are_bullets_in_the_order_of_the_sentences():
    lines = differences_section(significance_fixture(THREE_RUNS, THREE_VERDICTS), None, stand_in_sentences)
    bullets = [line for line in lines if line.startswith("- ") and " vs " in line]
    assert bullets == ["- keras vs pytorch: mean difference +0.002: equivalent within ±0.01.",
                       "- keras vs tensorflow: mean difference +0.030: the difference is real.",
                       "- pytorch vs tensorflow: mean difference +0.028: undetermined: the runs cannot tell."]


def test_per_label_rows_are_grouped_by_label_with_signed_differences_intervals_and_verdicts():
    lines = differences_section(significance_fixture(THREE_RUNS, THREE_VERDICTS), None, stand_in_sentences)
    rows = [line for line in lines if line.startswith(("| Hernia", "| Cardiomegaly"))]
    assert rows == [
        "| Hernia | keras vs pytorch | +0.002 | -0.018 to +0.022 | undetermined |",
        "| Hernia | keras vs tensorflow | +0.030 | +0.010 to +0.050 | undetermined |",
        "| Hernia | pytorch vs tensorflow | +0.028 | +0.008 to +0.048 | undetermined |",
        "| Cardiomegaly | keras vs pytorch | +0.002 | -0.018 to +0.022 | equivalent |",
        "| Cardiomegaly | keras vs tensorflow | +0.030 | +0.010 to +0.050 | different (keras higher) |",
        "| Cardiomegaly | pytorch vs tensorflow | +0.028 | +0.008 to +0.048 | undetermined |",
    ]


def test_folds_are_named_in_the_training_noise_sentence():
    lines = differences_section(significance_fixture(THREE_RUNS, THREE_VERDICTS, folds=5), None, stand_in_sentences)
    assert any("with the same data (5-fold cross-validation: run r of every worker has the same fold) and "
               "different training seeds" in line for line in lines)


def test_one_run_per_worker_says_noise_was_not_measured_and_claims_nothing():
    significance = significance_fixture(ONE_RUN, {("keras", "pytorch"): "undetermined"})
    lines = differences_section(significance, FIGURE, stand_in_sentences)
    assert lines[2].startswith("One run per worker, so training noise, what a framework does against itself with "
                               "the same data and another training seed, was not measured; `--seeds 0,1,2`")
    assert "| keras | 1 | 0.830 | n/a | 0.830 |" in lines
    assert "| Cardiomegaly | keras vs pytorch | +0.025 | n/a | undetermined |" in lines
    assert [line for line in lines if CLAIM.search(line)] == []


def test_the_real_verdict_sentences_of_a_one_run_comparison_claim_nothing():
    significance = significance_fixture(ONE_RUN, {("keras", "pytorch"): "undetermined"})
    lines = differences_section(significance, FIGURE)  # harness.report.verdicts.comparison_lines
    assert [line for line in lines if CLAIM.search(line)] == []


def test_a_significance_file_without_the_comparison_says_how_to_recompute_it():
    lines = differences_section({"workers": {}, "notes": ["Intervals resample patients."]}, FIGURE, stand_in_sentences)
    assert lines[0] == ("significance.json has no comparison over paired runs (an older harness wrote it); "
                        "`harness report RUN_DIR` recomputes it.")
    assert headings(lines) == ["### How this was computed"] and "- Intervals resample patients." in lines


@pytest.fixture(scope="module")
def two_worker_run(tmp_path_factory):
    """A null-worker run with three training seeds, its worker copied as a second worker ("twin")."""
    out = tmp_path_factory.mktemp("results")
    result = run_harness(["benchmark", "--workers", "null", *SMALL_RUN, "--seeds", "0,1,2", "--epochs", "1",
                          "--bootstrap", "0", "--localize", "off", "--out", str(out)], REPO_ROOT)
    assert result.returncode == 0, result.stderr
    (run,) = out.iterdir()
    for name in ("metrics.json", "run.json"):
        saved = json.loads((run / name).read_text())
        saved["workers"]["twin"] = saved["workers"]["null"]
        (run / name).write_text(json.dumps(saved))
    shutil.rmtree(run / "plots")
    return run


def test_the_report_places_the_section_and_its_figure_between_the_headline_and_the_per_label_aurocs(
        two_worker_run, monkeypatch):
    runs = {"null": [0.5, 0.5, 0.5], "twin": [0.5, 0.5, 0.5]}
    (two_worker_run / "significance.json").write_text(json.dumps(
        significance_fixture(runs, {("null", "twin"): "equivalent"})))
    monkeypatch.setattr("harness.report.sections.comparison_lines", stand_in_sentences)
    figures = write_figures(two_worker_run)
    assert (two_worker_run / PAIRED_RUNS).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    report = render_report(two_worker_run, figures)
    assert headings(report.splitlines())[:10] == [
        "# resnet50 on phantom, seed 0", "## Headline", "## Which differences are real",
        "### Training noise: each worker against itself",
        "### Between workers: the mean difference over paired runs", "### Per label", "### How this was computed",
        "## Agreement and time to target", "## Figures", "### Test AUROC per label"]
    section = report[report.index("## Which differences are real"):report.index("## Agreement and time to target")]
    assert f"![Every run, paired across workers]({PAIRED_RUNS})" in section
    assert report.count(PAIRED_RUNS) == 1  # placed in the section only
    assert "| twin | 3 | 0.500 | 0.006 | 0.500–0.500 |" in section
    assert "- null vs twin: mean difference +0.000: equivalent within ±0.01." in section
    assert "DeLong" not in report and "## Per-label tests" not in report
    assert [line for line in section.splitlines() if CLAIM.search(line)] == []

    write_report(two_worker_run)  # the HTML page inlines all five figures
    assert (two_worker_run / "report.html").read_text().count("data:image/png;base64,") == 5

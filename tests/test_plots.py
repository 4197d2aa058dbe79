"""The report's figures (harness.report.plots) and its self-contained HTML page (harness.report.html)."""

from __future__ import annotations

import base64
import re
import struct

import numpy as np
import pytest

from harness.report import paired_runs_plot, plots
from harness.report.html import render_html

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
NIH_LABELS = ["Atelectasis", "Cardiomegaly", "Effusion", "Infiltration", "Mass", "Nodule", "Pneumonia",
              "Pneumothorax", "Consolidation", "Edema", "Emphysema", "Fibrosis", "Pleural_Thickening", "Hernia"]
THREE_WORKERS = ["keras", "pytorch", "a-twenty-char-worker"]


def png_size(data: bytes) -> tuple[int, int]:
    """Width and height from the IHDR chunk, which must follow the signature."""
    assert data[:8] == PNG_SIGNATURE
    assert data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


def auroc_table(labels: list[str], workers: list[str]) -> dict[str, dict]:
    rng = np.random.default_rng(1)
    table = {}
    for name in workers:
        estimate = rng.uniform(0.6, 0.9, len(labels)).tolist()
        table[name] = {"estimate": estimate, "low": [e - 0.03 for e in estimate], "high": [e + 0.03 for e in estimate]}
    first = table[workers[0]]
    first["estimate"][0] = None  # a label without both classes
    first["low"][-1] = float("nan")
    if len(workers) > 1:
        table[workers[1]]["low"] = table[workers[1]]["high"] = None  # no intervals at all
    return table


def roc_table(labels: list[str], workers: list[str], points: int = 3000) -> dict[str, dict[str, dict]]:
    rng = np.random.default_rng(2)
    curves: dict[str, dict[str, dict]] = {label: {} for label in labels}
    for label in labels:
        for name in workers:
            fpr = np.concatenate([[0.0], np.sort(rng.random(points)), [1.0]])
            tpr = np.maximum(fpr, np.sqrt(fpr))
            curves[label][name] = {"fpr": fpr, "tpr": tpr, "auroc": 0.667}
    curves[labels[0]][workers[0]]["auroc"] = None
    curves[labels[-1]][workers[-1]]["tpr"] = np.full(points + 2, np.nan)  # nothing drawable
    return curves


def epoch_rows(workers: list[str], runs: list[str]) -> list[dict]:
    rows = []
    for w, name in enumerate(workers):
        for r, run in enumerate(runs):
            for epoch in range(1, 6):
                rows.append({"worker": name, "run": run, "epoch": epoch, "train_loss": 0.2 - 0.02 * epoch + 0.003 * w,
                             "validation_loss": 0.19 - 0.01 * epoch + 0.002 * r, "validation_macro_auroc": 0.7 + 0.02 * epoch,
                             "learning_rate": 1e-3 if epoch <= 3 else 1e-4, "best": epoch == 5, "lr_changed": epoch == 3})
    rows[1]["validation_loss"] = None
    rows[2]["validation_macro_auroc"] = float("nan")
    rows[3] = {key: str(value) for key, value in rows[3].items()}  # as csv.DictReader hands them over
    return rows


def throughput_table(workers: list[str]) -> dict[str, dict]:
    table = {name: {"train": 300.0 + i, "train_low": 280.0, "train_high": 320.0, "compute": 410.0, "compute_low": None,
                    "compute_high": None, "predict": 1500.0, "predict_low": float("nan"), "predict_high": 1600.0}
             for i, name in enumerate(workers)}
    table[workers[-1]]["predict"] = None
    table[workers[0]]["compute"] = float("nan")
    return table


def every_figure(labels: list[str], workers: list[str], runs: list[str]) -> dict[str, bytes]:
    return {
        "per_label_auroc": plots.per_label_auroc_chart(labels, auroc_table(labels, workers)),
        "roc_curves": plots.roc_curves(labels, roc_table(labels, workers)),
        "learning_curves": plots.learning_curves(epoch_rows(workers, runs)),
        "throughput": plots.throughput_bars(throughput_table(workers)),
    }


@pytest.fixture(scope="module")
def figures_14_labels_3_workers() -> dict[str, bytes]:
    return every_figure(NIH_LABELS, THREE_WORKERS, ["seed 0 fold 1", "seed 0 fold 2"])


def test_every_figure_is_an_1100px_wide_png_for_14_labels_3_workers_with_missing_values(figures_14_labels_3_workers):
    sizes = {name: png_size(data) for name, data in figures_14_labels_3_workers.items()}
    assert {width for width, _ in sizes.values()} == {1100}
    assert sizes["per_label_auroc"][1] == 995  # 15 rows of 3 bars: (15 * (0.13 * 3 + 0.16) + 1.7) in at 100 dpi
    assert sizes["roc_curves"][1] == 1046  # a 4 x 4 grid: 4 rows of (11 / 4 * 0.86) in + 1 in
    assert sizes["learning_curves"] == (1100, 760)
    assert sizes["throughput"] == (1100, 320)


def test_every_figure_is_a_png_for_2_labels_1_worker_with_missing_values():
    sizes = {name: png_size(data) for name, data in every_figure(["Effusion", "Hernia"], ["keras"], [""]).items()}
    assert {width for width, _ in sizes.values()} == {1100}
    assert sizes["per_label_auroc"][1] == 300  # the 3-inch floor
    assert sizes["roc_curves"][1] == 573  # one row of two panels


def test_identical_inputs_give_identical_png_bytes(figures_14_labels_3_workers):
    again = every_figure(NIH_LABELS, THREE_WORKERS, ["seed 0 fold 1", "seed 0 fold 2"])
    assert again == figures_14_labels_3_workers
    assert b"Software" not in again["roc_curves"]  # no version tag: the bytes do not depend on matplotlib's


def test_worker_colors_are_distinct_colour_blind_safe_and_independent_of_order():
    colors = plots.worker_colors(["tensorflow", "keras", "pytorch"])
    assert colors == {"keras": "#0072B2", "pytorch": "#E69F00", "tensorflow": "#009E73"}
    assert plots.worker_colors(["pytorch", "keras", "tensorflow", "keras"]) == colors
    many = plots.worker_colors([f"worker{i:02d}" for i in range(17)])
    assert len(set(many.values())) == 17


def test_passed_colours_override_the_defaults_so_a_worker_keeps_its_colour_in_every_figure():
    everyone = plots.worker_colors(["keras", "pytorch", "tensorflow"])
    alone = plots.throughput_bars({"tensorflow": {"train": 100.0}}, colors=everyone)
    recoloured = plots.throughput_bars({"tensorflow": {"train": 100.0}})
    assert alone != recoloured  # tensorflow is green with everyone's colours, blue when alone
    assert plots._colors(["tensorflow"], everyone) == {"tensorflow": "#009E73"}


def test_long_roc_curves_are_thinned_to_a_201_point_grid_keeping_steps_and_ends():
    levels = np.linspace(0.0, 1.0, 12_501)
    fpr = np.repeat(levels, 2)  # 25,002 points: at each fpr a vertical step up to sqrt(fpr)
    tpr = np.repeat(np.sqrt(levels), 2)
    tpr[2::2] = np.sqrt(levels[:-1])
    thin_fpr, thin_tpr = plots._thin_roc(fpr, tpr)
    assert thin_fpr.size == 202
    assert (thin_fpr[0], thin_tpr[0]) == (0.0, 0.0) and (thin_fpr[-1], thin_tpr[-1]) == (1.0, 1.0)
    assert np.all(np.diff(thin_fpr) >= 0) and np.all(np.diff(thin_tpr) >= 0)
    assert np.max(np.abs(thin_tpr[1:] - np.sqrt(thin_fpr[1:]))) < 0.01
    short = plots._thin_roc(np.array([0.0, 0.5, 1.0]), np.array([0.0, 0.8, 1.0]))
    assert [a.tolist() for a in short] == [[0.0, 0.5, 1.0], [0.0, 0.8, 1.0]]


def test_per_label_chart_names_the_worker_whose_values_do_not_match_the_labels():
    with pytest.raises(ValueError, match=r"worker 'keras' has 1 estimate values for 2 labels \(Effusion, Hernia\)"):
        plots.per_label_auroc_chart(["Effusion", "Hernia"], {"keras": {"estimate": [0.7]}})


def paired_runs(workers: list[str], seeds: list[int], folds: list[int | None]) -> dict[str, list[dict]]:
    """Every worker's runs, seeds x folds, in run order, with a worker offset and a run-to-run spread."""
    rng = np.random.default_rng(4)
    return {name: [{"seed": seed, "fold": fold, "macro_auroc": float(0.8 + 0.01 * w + rng.normal(0, 0.01))}
                   for seed in seeds for fold in folds]
            for w, name in enumerate(workers)}


def test_paired_runs_chart_is_an_1100_by_460_png_with_one_run_several_runs_folds_and_gaps():
    one = paired_runs(THREE_WORKERS, [0], [None])
    several = paired_runs(THREE_WORKERS, [0, 1, 2], [None])
    folds = paired_runs(["keras", "pytorch"], [0, 1], [1, 2, 3])
    folds["pytorch"][1]["macro_auroc"] = None  # a run that could not be scored: its line breaks there
    folds["keras"][4]["macro_auroc"] = float("nan")
    alone = {"null": [{"seed": 0, "fold": None, "macro_auroc": 0.5}]}  # one worker, one run, a flat axis
    unscored = {"keras": [{"seed": 0, "fold": None, "macro_auroc": None}], "pytorch": []}
    for runs in (one, several, folds, alone, unscored):
        assert png_size(paired_runs_plot.paired_runs_chart(runs)) == (1100, 460)


def test_paired_runs_chart_gives_identical_png_bytes_for_identical_runs_and_others_when_one_run_moves():
    runs = paired_runs(THREE_WORKERS, [0, 1, 2], [None])
    first = paired_runs_plot.paired_runs_chart(runs, plots.worker_colors(THREE_WORKERS))
    assert paired_runs_plot.paired_runs_chart(runs, plots.worker_colors(THREE_WORKERS)) == first
    assert b"Software" not in first
    runs["pytorch"][2]["macro_auroc"] += 0.005
    assert paired_runs_plot.paired_runs_chart(runs, plots.worker_colors(THREE_WORKERS)) != first


def test_runs_pair_across_workers_by_seed_and_fold_not_by_their_place_in_the_list():
    runs = paired_runs(["keras", "pytorch"], [0, 1], [1, 2])
    keras = [run["macro_auroc"] for run in runs["keras"]]
    pytorch = [run["macro_auroc"] for run in runs["pytorch"]]
    runs["pytorch"].reverse()
    del runs["pytorch"][0]  # seed 1, fold 2 missing in pytorch
    values = paired_runs_plot.paired_run_values(runs)
    assert list(values) == [("0", "1"), ("0", "2"), ("1", "1"), ("1", "2")]  # seed and fold, in keras's run order
    assert [row[0] for row in values.values()] == keras
    assert [row[1] for row in values.values()][:3] == pytorch[:3] and np.isnan(values[("1", "2")][1])
    assert [paired_runs_plot._run_name(key) for key in values][:2] == ["seed 0, fold 1", "seed 0, fold 2"]
    assert list(paired_runs_plot.paired_run_values(paired_runs(["keras"], [0, 1], [None]))) == [("0", ""), ("1", "")]
    assert paired_runs_plot._run_name(("1", "")) == "seed 1"


def test_paired_runs_chart_names_the_worker_with_two_runs_of_one_seed_and_fold():
    runs = {"keras": [{"seed": 0, "fold": 2, "macro_auroc": 0.8}, {"seed": 0, "fold": 2, "macro_auroc": 0.81}]}
    with pytest.raises(ValueError, match=r"worker 'keras' has two runs of seed 0, fold 2; runs pair across workers"):
        paired_runs_plot.paired_runs_chart(runs)
    with pytest.raises(ValueError, match="no workers to plot"):
        paired_runs_plot.paired_runs_chart({})


def test_run_names_are_stacked_apart_but_never_below_their_dot():
    assert paired_runs_plot._stacked([0.80, 0.801, 0.7, 0.8005], 0.01) == pytest.approx([0.80, 0.82, 0.7, 0.81])
    assert paired_runs_plot._stacked([], 0.01) == []


@pytest.fixture
def report_dir(tmp_path):
    (tmp_path / "plots").mkdir()
    (tmp_path / "plots" / "auroc.png").write_bytes(PNG_SIGNATURE + b"figure one")
    (tmp_path / "plots" / "a&b<c> d.png").write_bytes(PNG_SIGNATURE + b"figure two")
    return tmp_path


REPORT = """# Run <x> & co

> Error: file `data/<odd>&name.csv` not found

| worker | macro AUROC | test positives | vs keras | note |
|---|---|---|---|---|
| keras | **0.861** | 1,234 | - | a & b |
| pytorch | 0.862 ± 0.010 | n/a | significant (p = 0.01) | |
| tensorflow | 0.850 [0.84, 0.86] | 25,000 images | not significant | |
| jax | 0.849 | 1 | different (keras higher) | not different |

![Figure 1: AUROC per label](plots/auroc.png)

![Figure 2](plots/a&b<c>%20d.png)

![Figure 3](plots/gone<1>&.png)

![remote](https://example.com/x.png)
"""


def test_render_html_inlines_each_local_image_as_a_base64_data_uri(report_dir):
    page = render_html(REPORT, report_dir, "run")
    sources = re.findall(r'<img [^>]*src="([^"]*)"', page)
    assert sources == ["data:image/png;base64," + base64.b64encode(PNG_SIGNATURE + b"figure one").decode(),
                       "data:image/png;base64," + base64.b64encode(PNG_SIGNATURE + b"figure two").decode()]
    assert '<figcaption>Figure 1: AUROC per label</figcaption>' in page


def test_render_html_references_nothing_outside_the_page(report_dir):
    page = render_html(REPORT, report_dir, "run")
    assert not re.search(r'(?:src|href)="https?://', page)
    assert 'src="plots/' not in page
    assert "<script" not in page and "<link" not in page
    assert "<style>" in page


def test_render_html_marks_missing_and_remote_images_visibly(report_dir):
    page = render_html(REPORT, report_dir, "run")
    assert '<span class="missing-figure">missing figure: plots/gone&lt;1&gt;&amp;.png</span>' in page
    assert '<span class="missing-figure">missing figure: https://example.com/x.png</span>' in page


def test_render_html_renders_pipe_tables_and_right_aligns_numeric_cells(report_dir):
    page = render_html(REPORT, report_dir, "run")
    assert page.count("<table>") == 1 and '<div class="table-wrap"><table>' in page
    assert '<td class="num"><strong>0.861</strong></td>' in page  # bold stays bold
    for cell in ("0.862 ± 0.010", "0.850 [0.84, 0.86]", "1,234", "n/a", "25,000 images"):
        assert f'<td class="num">{cell}</td>' in page
    assert '<th class="num">macro AUROC</th>' in page and '<th class="num">test positives</th>' in page
    assert "<td>keras</td>" in page and '<th>worker</th>' in page
    assert "<td>-</td>" in page  # a dash in a column of words stays left-aligned


def test_render_html_highlights_significant_and_different_but_not_not_significant_cells(report_dir):
    page = render_html(REPORT, report_dir, "run")
    assert '<td class="significant">significant (p = 0.01)</td>' in page
    assert "<td>not significant</td>" in page
    assert '<td class="significant">different (keras higher)</td>' in page  # the comparison's verdict
    assert "<td>not different</td>" in page


def test_render_html_escapes_angle_brackets_and_ampersands_exactly_once(report_dir):
    page = render_html(REPORT, report_dir, "Run <x> & co")
    assert "<title>Run &lt;x&gt; &amp; co</title>" in page
    assert "<h1>Run &lt;x&gt; &amp; co</h1>" in page
    assert "<code>data/&lt;odd&gt;&amp;name.csv</code>" in page
    assert "<td>a &amp; b</td>" in page
    assert "&amp;amp;" not in page and "&amp;lt;" not in page

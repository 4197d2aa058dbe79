"""Localisation of a run directory: every run's saved maps scored against the boxes, and the report's section.

Reads cams/<worker>/<run>/{test,validation}.npz (harness.training.localize), localization/boxes.npy and
the test patients; scores every run with harness.evaluation.localization (thresholds tuned on that run's
own validation maps, or fixed) and summarises with patient-bootstrap intervals and paired comparisons
(harness.evaluation.localization_statistics) into localization.json. `harness benchmark` calls it after
the last run and `harness report` when it rescores, so both write the same file.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from harness.evaluation.comparison import DEFAULT_MARGIN
from harness.evaluation.localization import CaseScores, localization_cases, score_cases, tune_thresholds
from harness.evaluation.localization_statistics import summarise
from harness.records.run_directory import write_json_atomically
from harness.report.localization_gallery import GalleryRow, gallery_chart
from harness.report.sections import table
from harness.report.significance import _paired_runs, fold_ratio
from harness.report.verdicts import pair_verdict

SUMMARY = "localization.json"
GALLERY = "plots/localization_gallery.png"
FIXED_THRESHOLD = 0.5
HEADLINE_OVERLAPS = (0.1, 0.25, 0.5)  # Wang et al.'s accuracy columns in the main table (all are in the JSON)
HEADLINE_AFP = 0.25  # and one AFP column, so the table fits a page


def _test_indices(run_dir: Path) -> np.ndarray:
    """The test images' store indices (one test set for every fold: fold 1's file with folds)."""
    plain = run_dir / "labels" / "test_indices.npy"
    return np.load(plain if plain.exists() else run_dir / "labels" / "fold1" / "test_indices.npy")


def _maps(run_dir: Path, run: dict, part: str) -> tuple[np.ndarray, np.ndarray] | None:
    path = run_dir / run["localization"]["folder"] / f"{part}.npz"
    if not path.exists():
        return None
    with np.load(path) as saved:
        return saved["sample_index"], saved["cams"]


def _localized(workers: dict) -> dict:
    """The workers every one of whose paired runs saved maps (an older run directory has none)."""
    paired = _paired_runs(workers) if workers else []
    chosen = {}
    for name, worker in workers.items():
        runs = [run for run in worker["runs"] if (run["seed"], run.get("fold")) in paired]
        if runs and all(run.get("localization") for run in runs):
            chosen[name] = runs
    return chosen


def summarise_run(run_dir: Path, resamples: int, seed: int, threshold: str = "tuned",
                  components: str = "all") -> dict | None:
    """Score every run's maps and summarise them; None when no run saved maps. Writes localization.json."""
    metrics_path = run_dir / "metrics.json"
    if not metrics_path.exists() or not (run_dir / "localization" / "boxes.npy").exists():
        return None
    workers = _localized(json.loads(metrics_path.read_text())["workers"])
    if not workers:
        return None
    record = json.loads((run_dir / "run.json").read_text())
    size, label_names = record["data"]["image_size"], record["data"]["label_names"]
    boxes = np.load(run_dir / "localization" / "boxes.npy")
    test_indices = _test_indices(run_dir)
    test_patients = np.asarray(json.loads((run_dir / "labels" / "samples.json").read_text())["test"]["patient_ids"])
    per_worker: dict[str, list[CaseScores]] = {}
    choices: dict[str, list[list[str]]] = {}
    patients: np.ndarray | None = None
    for name, runs in workers.items():
        per_worker[name], choices[name] = [], []
        for run in runs:
            test = _maps(run_dir, run, "test")
            assert test is not None  # a run with "localization" saved its test maps
            cases = localization_cases(test[1], test[0], boxes, size)
            validation = _maps(run_dir, run, "validation")
            if threshold == "tuned" and validation is not None:
                choice = tune_thresholds(localization_cases(validation[1], validation[0], boxes, size),
                                         components=components, fixed=FIXED_THRESHOLD)
                thresholds, fell_back = choice.thresholds, [label_names[j] for j in choice.fell_back]
            else:
                value = FIXED_THRESHOLD if threshold == "tuned" else float(threshold)
                # Tuning asked but no validation image has a box: every finding falls back.
                thresholds = np.full(len(label_names), value)
                fell_back = list(label_names) if threshold == "tuned" else []
            per_worker[name].append(score_cases(cases, thresholds, components))
            choices[name].append(fell_back)
            if patients is None:
                patients = test_patients[np.searchsorted(test_indices, cases.sample)]
    assert patients is not None  # every worker here has at least one run
    # --bootstrap 0 turns the verdicts off, not the intervals: the localisation table keeps 100 replicates.
    summary = summarise(per_worker, patients, label_names, resamples=resamples or 100, seed=seed,
                        fold_ratio=fold_ratio(record["data"]),
                        margin=record["config"].get("equivalence_margin", DEFAULT_MARGIN))
    summary["rules"] = {"threshold": threshold, "fixed_threshold": FIXED_THRESHOLD, "components": components,
                        "fell_back": {name: sorted(set().union(*map(set, lists))) for name, lists in choices.items()},
                        "feature_map": next(iter(workers.values()))[0]["localization"].get("feature_map")}
    write_json_atomically(run_dir / SUMMARY, summary)
    return summary


def read_summary(run_dir: Path) -> dict | None:
    path = run_dir / SUMMARY
    return json.loads(path.read_text()) if path.exists() else None


def _interval(entry: dict | None, digits: int = 3) -> str:
    if not entry or entry.get("estimate") is None:
        return "n/a"
    low, high = entry.get("low"), entry.get("high")
    shown = f"{entry['estimate']:.{digits}f}"
    return shown if low is None or high is None else f"{shown} [{low:.{digits}f}, {high:.{digits}f}]"


def _margin_text(margin: dict) -> str:
    text = _interval(margin)
    if margin.get("estimate") is None:
        return text
    return f"**{text}**" if margin.get("excludes_zero") and margin["estimate"] > 0 else text


def localization_table(summary: dict) -> list[str]:
    """Table: per worker, the pointing game against a random point, mean IoU, Wang et al.'s accuracy and AFP."""
    overlaps = [t for t in HEADLINE_OVERLAPS if t in summary["overlap_thresholds"]]
    header = (["", "hit rate", "hit rate - random point", "mean IoU"]
              + [f"Acc. IoBB>{t:g}" for t in overlaps] + [f"AFP IoBB>{HEADLINE_AFP:g}"])
    rows = []
    for name, worker in summary["workers"].items():
        m = worker["metrics"]
        rows.append([f"{name} ({worker['runs']} run{'s' if worker['runs'] > 1 else ''})", _interval(m["hit_rate"]),
                     _margin_text(worker["hit_rate_margin"]), _interval(m["mask_iou"])]
                    + [_interval(m.get(f"iobb_accuracy@{t:g}")) for t in overlaps]
                    + [_interval(m.get(f"iobb_afp@{HEADLINE_AFP:g}"), 2)])
    chance = summary["baselines"]["metrics"]
    rows.append(["chance: random point", _interval(chance["random_point_hit_rate"]), "0", "",
                 *[""] * (len(overlaps) + 1)])
    rows.append(["chance: centred box", "", "", _interval(chance["centred_box_mask_iou"])]
                + [_interval(chance.get(f"centred_box_iobb_accuracy@{t:g}")) for t in overlaps]
                + [_interval(chance.get(f"centred_box_iobb_afp@{HEADLINE_AFP:g}"), 2)])
    return table(header, rows)


def findings_table(summary: dict) -> list[str]:
    """Hit rate per finding and worker beside the random point's, with each finding's number of cases."""
    workers = list(summary["workers"])
    header = ["finding", "cases", "random point", *workers]
    rows = []
    for label, chance in summary["baselines"]["findings"].items():
        if not chance["cases"]:
            continue
        rows.append([label, str(chance["cases"]), _interval(chance["metrics"]["random_point_hit_rate"])]
                    + [_interval(summary["workers"][name]["findings"][label]["metrics"]["hit_rate"])
                       for name in workers])
    return table(header, rows)


def _pairs(summary: dict) -> list[str]:
    comparison = summary["comparison"]
    names = {"hit_rate": "hit rate", "mask_iou": "mean IoU"}
    return ["- " + pair_verdict(pair, comparison["level"], comparison["margin"],
                                names.get(pair["metric"], pair["metric"])) for pair in comparison["pairs"]]


def localization_lines(summary: dict | None, gallery: tuple[str, str, str] | None) -> list[str]:
    """The report's localisation section (nothing when the run saved no maps)."""
    if not summary:
        return []
    rules = summary.get("rules", {})
    size = rules.get("feature_map")
    threshold = ("tuned per finding on each run's validation boxes (0.05..0.95, best mean IoU; "
                 f"{rules.get('fixed_threshold', 0.5)} where a finding has no validation box)"
                 if rules.get("threshold") == "tuned" else f"fixed at {rules.get('threshold')}")
    regions = ("the largest connected region" if rules.get("components") == "largest"
               else "every connected region")
    lines = ["## Where each worker looks: localisation", "",
             f"Class activation maps computed by the harness from each worker's final feature maps"
             f"{f' ({size[0]} x {size[1]})' if size else ''} and its kept checkpoint's head weights, upsampled "
             "bilinearly (half-pixel centres) to the image, min-max normalised, cut at a threshold "
             f"{threshold}; detected boxes: those of {regions} above it. "
             f"{summary['cases']:,} cases (an image and a finding with a true box) on {summary['images']:,} test "
             f"images of {summary['patients']:,} patients.", "",
             "**Table: localisation on the held-out test images** (hit rate: the map's maximum inside a true box, "
             "the pointing game; mean IoU of the thresholded map with the boxes (CheXlocalize); Acc. and AFP: Wang "
             "et al. 2017's accuracy at T(IoBB) and false positives per case at T(IoBB) = 0.25, every T and IoU in "
             "localization.json; brackets: "
             f"{summary['level']:.0%} intervals; bold: a margin over chance whose interval excludes 0).", ""]
    lines += localization_table(summary)
    fell_back = {name: labels for name, labels in rules.get("fell_back", {}).items() if labels}
    if fell_back:
        lines += ["- No validation box to tune on, so the fixed threshold was used for: " + "; ".join(
            f"{name}: {', '.join(labels)}" for name, labels in fell_back.items()) + ".", ""]
    if size and min(size) < 4:
        lines += [f"- **The feature maps are {size[0]} x {size[1]}**: each map has only {size[0] * size[1]} values. "
                  "Upsampled, its maximum is always a border cell's plateau at the image's edge, so the point lies "
                  "near a corner or an edge whatever the network learnt, and a hit rate below the random point's is "
                  "an artefact of the resolution, not a property of any framework. Use at least 128 px (4 x 4 "
                  "maps) to compare where the frameworks look.", ""]
    lines += ["**Hit rate per finding**", ""] + findings_table(summary)
    if summary["comparison"]["pairs"]:
        lines += ["**Between workers** (paired on the same cases and runs; " + summary["comparison"]["family"]
                  + ", Holm-corrected):", ""] + _pairs(summary) + [""]
    lines += [f"- {note}" for note in summary.get("notes", [])] + [""]
    if gallery:
        title, path, caption = gallery
        lines += [f"### {title}", "", f"![{title}]({path})", "", caption, ""]
    return lines


def gallery_figure(run_dir: Path) -> tuple[str, str, bytes, str] | None:
    """The gallery: each worker's first run's map of each gallery image and finding; None without maps."""
    path = run_dir / "localization" / "gallery.npz"
    metrics_path = run_dir / "metrics.json"
    if not path.exists() or not metrics_path.exists():
        return None
    workers = _localized(json.loads(metrics_path.read_text())["workers"])
    if not workers:
        return None
    record = json.loads((run_dir / "run.json").read_text())
    label_names = record["data"]["label_names"]
    samples = json.loads((run_dir / "labels" / "samples.json").read_text())["test"]["sample_ids"]
    test_indices = _test_indices(run_dir)
    boxes = np.load(run_dir / "localization" / "boxes.npy")
    with np.load(path) as saved:
        chosen, pixels = saved["sample_index"], saved["pixels"]
        per_finding = int(saved["per_finding"]) if "per_finding" in saved else len(chosen)
    first_maps = {}
    for name, runs in workers.items():
        maps = _maps(run_dir, runs[0], "test")
        assert maps is not None
        first_maps[name] = dict(zip(maps[0].tolist(), maps[1], strict=True))
    rows = []
    for label in np.unique(boxes[np.isin(boxes[:, 0], chosen), 1]):
        # The gallery holds each finding's first boxed test images; an image chosen for another finding
        # that also has this one comes later in store order and is not repeated here.
        with_label = [(position, sample) for position, sample in enumerate(chosen.tolist())
                      if ((boxes[:, 0] == sample) & (boxes[:, 1] == label)).any()][:per_finding]
        for position, sample in with_label:
            own = boxes[(boxes[:, 0] == sample) & (boxes[:, 1] == label)]
            sample_id = samples[int(np.searchsorted(test_indices, sample))]
            rows.append(GalleryRow(label_names[label], sample_id, pixels[position], own[:, 2:6],
                                   {name: maps[sample][label] if sample in maps else None
                                    for name, maps in first_maps.items()}))
    if not rows:
        return None
    several = any(len(runs) > 1 for runs in workers.values())
    caption = ("Each row: one test image and one finding; first the image with its true box (green), then each "
               f"worker's map for that finding{' (its first run)' if several else ''}, upsampled and normalised as "
               "for scoring (red: high), a cross at its maximum. The same images and the same drawing for every "
               "worker.")
    return "Localisation gallery", GALLERY.removeprefix("plots/"), gallery_chart(rows, list(workers)), caption

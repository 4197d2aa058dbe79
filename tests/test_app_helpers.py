"""The page's pure parts: the side-by-side table, disagreements, the map overlay, model names and cards,
and the `harness app` command line (without starting a server)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pytest

from harness.app import launch
from harness.app import readings as tables
from harness.app.cards import (
    card_markdown,
    default_selection,
    escape_markdown,
    framework_text,
    model_label,
    option_text,
)
from harness.app.overlay import cam_overlay, display_image
from harness.app.page_settings import PageSettings, settings_from_environment
from harness.model_registry.registered import RegisteredModel

LABELS = ("Atelectasis", "Effusion", "Mass")


def reading(probabilities, thresholds=None, labels=LABELS) -> tables.ModelReading:
    probabilities = np.array(probabilities, float)
    thresholds = np.full(len(probabilities), 0.5) if thresholds is None else np.array(thresholds, float)
    return tables.ModelReading("m", labels, probabilities, probabilities >= thresholds, thresholds,
                        np.zeros((8, 8), np.uint8), None)


def registered(name="cxrbench-resnet50-pytorch", version=1, aliases=(), card=None) -> RegisteredModel:
    return RegisteredModel(name, version, tuple(aliases), card if card is not None else {"worker": "pytorch"},
                           Path("/nowhere/model.safetensors"))


def test_the_table_puts_each_models_probabilities_side_by_side_with_flags_and_marks_disagreement():
    readings = {"A": reading([0.9, 0.6, 0.1]), "B": reading([0.8, 0.4, 0.2], thresholds=(0.5, 0.5, 0.15))}
    table = tables.probability_table(readings)
    assert list(table.columns) == ["A", "B", tables.AGREEMENT]
    assert table.loc["Atelectasis"].tolist() == ["0.900 ⚑", "0.800 ⚑", "all flag"]
    assert table.loc["Effusion"].tolist() == ["0.600 ⚑", "0.400", "⚠ disagree (1 of 2 flag)"]
    # B flags Mass at its own (lower) threshold, A does not: a disagreement although B's probability is low.
    assert table.loc["Mass"].tolist() == ["0.100", "0.200 ⚑", "⚠ disagree (1 of 2 flag)"]
    assert tables.disagreements(readings).tolist() == [False, True, True]
    assert tables.default_finding(readings) == "Effusion"


def test_the_style_marks_flagged_cells_and_paints_disagreeing_rows():
    readings = {"A": reading([0.9, 0.6, 0.1]), "B": reading([0.8, 0.4, 0.2])}
    styles = tables.styled_table(readings)._compute().ctx  # (row, column) -> [(property, value), ...]
    bold_red = [tuple(part.strip().split(": ")) for part in tables.FLAGGED_CELL.split(";")]
    yellow = tuple(tables.DISAGREE_BACKGROUND.split(": "))
    assert styles[(0, 0)] == bold_red and styles[(0, 1)] == bold_red and (0, 2) not in styles
    assert styles[(1, 0)] == [*bold_red, yellow] and styles[(1, 1)] == [yellow] and styles[(1, 2)] == [yellow]
    assert (2, 0) not in styles and (2, 1) not in styles


def test_a_label_one_model_lacks_shows_a_dash_and_does_not_count_as_disagreement():
    readings = {"A": reading([0.9, 0.1], labels=LABELS[:2]),
                "B": reading([0.8, 0.1, 0.9], labels=("Atelectasis", "Effusion", "Hernia"))}
    table = tables.probability_table(readings)
    assert table.index.tolist() == ["Atelectasis", "Effusion", "Hernia"]
    assert table.loc["Hernia"].tolist() == ["—", "0.900 ⚑", "all flag"]
    assert not tables.disagreements(readings).any()
    assert tables.default_finding(readings) == "Atelectasis"  # no disagreement: the most probable finding


def test_one_model_never_disagrees_with_itself():
    assert not tables.disagreements({"A": reading([0.9, 0.6, 0.1])}).any()


def test_the_overlay_leaves_the_image_grey_where_the_map_is_zero_and_colours_it_where_the_map_is_high():
    image = np.full((8, 8), 100, np.uint8)
    cam = np.zeros((8, 8))
    cam[:, 4:] = 1.0
    out = cam_overlay(image, cam, size=16, strength=0.6)
    assert out.shape == (16, 16, 3) and out.dtype == np.uint8
    assert (out[:, :6] == 100).all()  # far from the hot half (bilinear spreads over a pixel): untouched grey
    hot = out[:, 12:].reshape(-1, 3)  # jet at 1.0 is dark red: 0.4 grey + 0.6 (0.5, 0, 0)
    assert np.abs(hot.astype(int) - [round((0.4 * 100 / 255 + 0.6 * 0.5) * 255), 40, 40]).max() <= 1


def test_the_overlay_refuses_a_map_that_is_not_two_dimensional():
    with pytest.raises(ValueError, match="must be 2-D"):
        cam_overlay(np.zeros((8, 8), np.uint8), np.zeros((1, 8, 8)))


def test_display_image_shrinks_large_radiographs_and_keeps_small_ones():
    assert display_image(np.zeros((3000, 1500), np.uint8), longest=600).shape == (600, 300)
    small = np.zeros((200, 100), np.uint8)
    assert display_image(small, longest=600) is small


def test_models_are_named_by_alias_and_version_and_shown_with_their_framework_versions():
    champion = registered(version=3, aliases=("champion", "staging"),
                          card={"worker": "pytorch", "framework_versions": {"torch": "2.9.1", "torchvision": "0.24.1"}})
    assert model_label(champion) == "cxrbench-resnet50-pytorch@champion, @staging (v3)"
    assert model_label(registered(version=2)) == "cxrbench-resnet50-pytorch v2"
    assert option_text(champion) == ("cxrbench-resnet50-pytorch@champion, @staging (v3) · "
                                     "torch 2.9.1, torchvision 0.24.1")
    assert framework_text({"worker": "keras@3.14.0"}) == "keras@3.14.0"


def test_markdown_characters_in_names_and_messages_are_escaped():
    assert escape_markdown("a_b*c*[d](e) `f` <g> $h$ ~i~ |j| \\") == (
        r"a\_b\*c\*\[d\](e) \`f\` \<g\> \$h\$ \~i\~ \|j\| \\")


def test_the_default_selection_is_one_version_per_model_preferring_an_alias_then_the_newest():
    models = [registered(version=1, aliases=("champion",)), registered(version=2),
              registered("cxrbench-resnet50-keras", 4), registered("cxrbench-resnet50-keras", 5)]
    assert default_selection(models) == ["cxrbench-resnet50-pytorch@champion", "cxrbench-resnet50-keras/5"]


def test_the_card_reads_as_the_registry_renders_it_followed_by_the_whole_card():
    card = {"worker": "pytorch", "architecture": "resnet50", "image_size": 224, "labels": list(LABELS),
            "thresholds": [0.2, 0.35, 0.5], "thresholds_rule": "F1 on validation", "precision": "fp32",
            "framework_versions": {"torch": "2.9.1"}, "device": "cpu", "weights_sha256": "ab" * 32,
            "test": {"images": 120, "macro_auroc": {"estimate": 0.8123, "low": 0.79, "high": 0.834},
                     "auroc": {"Effusion": {"estimate": 0.9, "low": 0.85, "high": 0.95}}, "interval": "bootstrap"},
            "validation": {"macro_auroc": 0.8, "best_epoch": 3}, "parity": None, "dataset": "phantom",
            "data_sha256": "cd" * 32, "run_id": "run-7", "run": "pytorch/seed0", "seed": 0, "commit": "abc123",
            "odd_new_field": {"x": 1}}
    text = card_markdown(registered(aliases=("champion",), card=card))
    assert text.startswith("Aliases: @champion\n\n### cxrbench-resnet50-pytorch version 1\n")
    assert "- **Test macro AUROC**: 0.8123 [0.7900, 0.8340] on 120 images (bootstrap)" in text
    assert "| Effusion | 0.350 | 0.9000 [0.8500, 0.9500] |" in text
    assert '"odd_new_field": {' in text  # a field the rendering leaves out is still shown


def test_a_card_of_another_shape_still_shows_its_worker_thresholds_and_fields():
    text = card_markdown(registered(card={"worker": "keras", "image_size": 32, "labels": list(LABELS),
                                          "thresholds": [0.2, 0.35, 0.5]}))
    assert "- **Worker**: `keras` (keras)" in text and "| Effusion | 0.350 |" in text and '"image_size": 32' in text


def test_the_page_settings_travel_through_the_environment_and_bad_values_name_the_variable():
    settings = PageSettings("sqlite:////tmp/r.db", 1234, 90.0)
    assert settings_from_environment(settings.environment()) == settings
    with pytest.raises(ValueError, match="CXRBENCH_APP_MAX_UPLOAD_BYTES='lots' is not a number"):
        settings_from_environment({"CXRBENCH_APP_REGISTRY": "x", "CXRBENCH_APP_MAX_UPLOAD_BYTES": "lots"})


def app_arguments(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    launch.add_app_parser(parser.add_subparsers(dest="command"))
    return parser.parse_args(["app", *argv])


def test_the_command_serves_headless_on_loopback_with_the_upload_limit_and_no_watcher():
    argv, environment = launch.streamlit_command(app_arguments("--port", "8600", "--max-upload-mb", "7",
                                                               "--idle-minutes", "2"), "sqlite:////r.db")
    options = dict(zip(argv[5::2], argv[6::2], strict=True))
    assert argv[:5] == [sys.executable, "-m", "streamlit", "run", str(launch.PAGE)]
    assert options == {"--server.address": "127.0.0.1", "--server.port": "8600", "--server.headless": "true",
                       "--browser.gatherUsageStats": "false", "--server.maxUploadSize": "7",
                       "--server.fileWatcherType": "none", "--server.runOnSave": "false",
                       "--client.toolbarMode": "viewer", "--theme.base": "light"}
    assert settings_from_environment(environment) == PageSettings("sqlite:////r.db", 7 * 2**20, 120.0)


@pytest.mark.parametrize(("argv", "message"), [(("--port", "0"), "--port 0: must be between 1 and 65535"),
                                               (("--max-upload-mb", "0"), "--max-upload-mb 0: must be at least 1"),
                                               (("--idle-minutes", "-1"), "--idle-minutes -1.0: must be a positive")])
def test_bad_options_are_refused_before_anything_starts(argv, message):
    with pytest.raises(ValueError, match=message):
        launch.streamlit_command(app_arguments(*argv), "sqlite:////r.db")


def test_a_host_other_than_loopback_prints_a_warning_that_the_page_has_no_authentication(monkeypatch, capsys):
    started = []
    monkeypatch.setattr(launch.os, "execve", lambda path, argv, env: started.append(argv))
    assert launch.run_app(app_arguments("--host", "0.0.0.0", "--registry", "sqlite:////r.db")) == 0
    assert "WARNING: listening on 0.0.0.0: the page has no authentication" in capsys.readouterr().err
    assert started and started[0][started[0].index("--server.address") + 1] == "0.0.0.0"
    assert launch.run_app(app_arguments("--registry", "sqlite:////r.db")) == 0
    assert "WARNING" not in capsys.readouterr().err


def test_harness_app_on_the_command_line_reaches_streamlit_with_its_options(monkeypatch):
    from harness import cli

    started = []
    monkeypatch.setattr(launch.os, "execve", lambda path, argv, env: started.append((argv, env)))
    assert cli.main(["app", "--registry", "sqlite:////r.db", "--port", "8700"]) == 0
    argv, environment = started[0]
    assert argv[argv.index("--server.port") + 1] == "8700" and environment["CXRBENCH_APP_REGISTRY"] == "sqlite:////r.db"


@pytest.mark.parametrize(("host", "loopback"), [("127.0.0.1", True), ("127.1.2.3", True), ("::1", True),
                                                ("localhost", True), ("0.0.0.0", False), ("::", False),
                                                ("192.168.1.5", False), ("example.org", False)])
def test_loopback_hosts_are_recognised(host, loopback):
    assert launch.is_loopback(host) is loopback

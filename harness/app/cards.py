"""How a registered model is named on the page, and its model card as readable Markdown."""

from __future__ import annotations

import json
from collections.abc import Iterable

from harness.model_registry.cards import card_markdown as registry_card_markdown
from harness.model_registry.registered import RegisteredModel

# Characters that change inline Markdown, where Streamlit renders text: emphasis, code, links, HTML, LaTeX, strike,
# tables. A file name such as my_chest_x_ray.png must not turn into italics, nor a crafted one into a link.
_MARKDOWN_SPECIAL = str.maketrans({character: "\\" + character for character in "\\`*_[]<>$~|"})


def escape_markdown(text: str) -> str:
    """`text` shown as it is (a file name, an error message) where Streamlit would read it as Markdown."""
    return text.translate(_MARKDOWN_SPECIAL)


def model_label(model: RegisteredModel) -> str:
    """"name@alias (v3)" for a version with aliases (all of them), else "name v3"."""
    if model.aliases:
        return f"{model.name}@{', @'.join(model.aliases)} (v{model.version})"
    return f"{model.name} v{model.version}"


def framework_text(card: dict) -> str:
    """"torch 2.9.1, torchvision 0.24.1" from the card's framework versions (as the worker reported them),
    else the worker label it is served by."""
    versions = card.get("framework_versions") or {}
    if isinstance(versions, dict) and versions:
        return ", ".join(f"{name} {version}" for name, version in versions.items())
    return str(card.get("worker", "unknown framework"))


def option_text(model: RegisteredModel) -> str:
    """What the model chooser shows for one registered version: its name and what serves it."""
    return f"{model_label(model)} · {framework_text(model.card)}"


def default_selection(models: Iterable[RegisteredModel]) -> list[str]:
    """One version per registered model: the first with an alias (e.g. @champion), else the newest.

    Typically one model per framework, which is the comparison the page is for.
    """
    chosen: dict[str, RegisteredModel] = {}
    for model in models:
        held = chosen.get(model.name)
        if held is None or (bool(model.aliases), model.version) > (bool(held.aliases), held.version):
            chosen[model.name] = model
    return [model.reference() for model in chosen.values()]


def card_markdown(model: RegisteredModel) -> str:
    """The model card as Markdown: the registry's own rendering (the text `harness register` stored), then
    the whole card as JSON for the fields it leaves out.

    A card of another shape (older, or made by hand) that the registry's rendering cannot read still shows:
    its worker, input size and thresholds, and the JSON. The page never fails on a card.
    """
    card = model.card
    try:
        text = registry_card_markdown(model.name, model.version, card)
    except (KeyError, TypeError, ValueError, AttributeError):
        text = "\n".join([f"### {model_label(model)}", "", f"- **Worker**: `{card.get('worker')}` "
                          f"({framework_text(card)})", f"- **Input**: {card.get('image_size')} px", ""])
        labels, thresholds = card.get("labels"), card.get("thresholds")
        if isinstance(labels, list | tuple) and isinstance(thresholds, list | tuple) and len(labels) == len(thresholds):
            text += "\n".join(["| finding | validation threshold |", "|---|---|",
                               *(f"| {label} | {float(value):.3f} |" for label, value in zip(labels, thresholds,
                                                                                             strict=True))]) + "\n"
    aliases = f"Aliases: {', '.join('@' + alias for alias in model.aliases)}\n\n" if model.aliases else ""
    full = json.dumps(card, indent=2, sort_keys=True, default=str)
    return f"{aliases}{text}\nThe whole card:\n\n```json\n{full}\n```\n"

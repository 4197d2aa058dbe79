"""The Markdown report as one self-contained HTML page: figures inlined, CSS embedded, no scripts.

The page loads nothing from anywhere: every local image becomes a base64 data URI, so the file can
be mailed or archived on its own. Raw HTML in the Markdown is shown as text (the report is ours,
but paths and messages in it may contain `<` or `&`).
"""

from __future__ import annotations

import base64
import html
import mimetypes
import re
import xml.etree.ElementTree as etree
from pathlib import Path
from urllib.parse import unquote

import markdown
from markdown.extensions import Extension
from markdown.treeprocessors import Treeprocessor

_UNIT = r"(?:\s?(?:%|×|x|s|ms|px|[KMG]i?B)|\s(?:images|patients|epochs|img/s))?"
_NUMBER = rf"[-+−]?(?:\d{{1,3}}(?:,\d{{3}})+|\d+)(?:\.\d+)?(?:[eE][-+]?\d+)?{_UNIT}"
# "0.861", "0.862 ± 0.010", "1,234", "<0.001", "0.85 [0.82, 0.88]", "0.85 (0.82–0.88)", "25,000 images".
NUMBER_CELL = re.compile(
    rf"^(?:[<>≤≥~≈]\s?)?{_NUMBER}(?:\s?±\s?{_NUMBER}|\s?[\[(]{_NUMBER}\s?[,–-]\s?{_NUMBER}[\])])?$", re.IGNORECASE)
# Stand-ins for a missing number: right-aligned only in columns of numbers.
PLACEHOLDER_CELL = re.compile(r"^(?:n/a|-|—|–)$", re.IGNORECASE)
SIGNIFICANT = re.compile(r"(?<!not )(?<!non-)(?<!in)\bsignificant\b", re.IGNORECASE)
# A verdict cell of the comparison that claims a difference: "different (keras higher)".
DIFFERENT = re.compile(r"^different\b", re.IGNORECASE)

CSS = """
:root { color-scheme: light; --ink: #1d2126; --muted: #5b6570; --line: #d9dee3; --zebra: #f6f8fa;
        --head: #e9edf1; --accent: #0072b2; --mark: #fff3cd; --mark-edge: #e6a700; }
* { box-sizing: border-box; }
body { margin: 0 auto; max-width: 1160px; padding: 24px 30px 64px; color: var(--ink); background: #fff;
       font: 15px/1.55 system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, "Noto Sans",
             "Liberation Sans", sans-serif; }
h1 { font-size: 1.75em; line-height: 1.25; margin: 0.4em 0 0.6em; }
h2 { font-size: 1.3em; margin: 2em 0 0.6em; padding-bottom: 0.25em; border-bottom: 1px solid var(--line); }
h3 { font-size: 1.1em; margin: 1.5em 0 0.5em; }
code { font: 0.88em/1.4 ui-monospace, SFMono-Regular, Menlo, Consolas, "Liberation Mono", monospace;
       background: var(--zebra); border: 1px solid var(--line); border-radius: 4px; padding: 0 0.3em;
       overflow-wrap: anywhere; }
blockquote { margin: 1em 0; padding: 0.6em 1em; border-left: 4px solid var(--mark-edge); background: var(--mark); }
blockquote p { margin: 0.2em 0; }
ul, ol { padding-left: 1.4em; }
li { margin: 0.25em 0; }
.table-wrap { overflow: auto; max-height: 85vh; margin: 1em 0 1.4em; border: 1px solid var(--line);
              border-radius: 6px; }
table { border-collapse: separate; border-spacing: 0; width: 100%; font-size: 0.9em; }
th, td { padding: 0.35em 0.7em; border-bottom: 1px solid var(--line); text-align: left; vertical-align: top; }
th { position: sticky; top: 0; z-index: 1; background: var(--head); font-weight: 600; vertical-align: bottom; }
tbody tr:nth-child(even) td { background: var(--zebra); }
tbody tr:hover td { background: #eaf3fa; }
tbody tr:last-child td { border-bottom: none; }
th.num { text-align: right; }
td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
td.significant { box-shadow: inset 3px 0 0 var(--mark-edge); background: var(--mark) !important; }
figure { margin: 1.2em 0 1.8em; }
figure img { display: block; max-width: 100%; height: auto; margin: 0 auto; }
figcaption { color: var(--muted); font-size: 0.9em; text-align: center; margin-top: 0.4em; }
img { max-width: 100%; height: auto; }
.missing-figure { display: inline-block; padding: 0.5em 0.9em; border: 2px dashed #d55e00; color: #a23e00;
                  background: #fff5ef; font-weight: 600; }
@media print {
  body { max-width: none; padding: 0; font-size: 10pt; }
  .table-wrap { overflow: visible; max-height: none; border: none; }
  th { position: static; }
  thead { display: table-header-group; }
  tr, figure, blockquote { break-inside: avoid; }
  h2, h3 { break-after: avoid; }
  tbody tr:hover td { background: inherit; }
}
"""


def _data_uri(path: Path) -> str:
    kind = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
    return f"data:{kind};base64," + base64.b64encode(path.read_bytes()).decode("ascii")


def _missing(source: str) -> etree.Element:
    note = etree.Element("span", {"class": "missing-figure"})
    note.text = f"missing figure: {source}"
    return note


class _PageTreeprocessor(Treeprocessor):
    """Inline images (or mark them missing), wrap lone images in <figure> and tables in a scroller,
    and class table cells as numeric or significant."""

    def __init__(self, md: markdown.Markdown, base_dir: Path) -> None:
        super().__init__(md)
        self.base_dir = base_dir

    def run(self, root: etree.Element) -> None:
        parents = {child: parent for parent in root.iter() for child in parent}
        for image in list(root.iter("img")):
            self._inline(image, parents)
        for paragraph in list(root.iter("p")):
            children = list(paragraph)
            if len(children) == 1 and children[0].tag == "img" and not (paragraph.text or "").strip() \
                    and not (children[0].tail or "").strip():
                self._figure(paragraph, children[0])
        for table in list(root.iter("table")):
            self._classify(table)
            parent = parents[table]
            wrap = etree.Element("div", {"class": "table-wrap"})
            wrap.tail, table.tail = table.tail, None
            parent.insert(list(parent).index(table), wrap)
            parent.remove(table)
            wrap.append(table)

    def _inline(self, image: etree.Element, parents: dict) -> None:
        source = image.get("src", "")
        if source.startswith("data:"):
            return
        local = not re.match(r"^[a-z][a-z0-9+.-]*://", source, re.IGNORECASE)
        # As written, or percent-decoded (a Markdown link cannot hold a space: "a%20b.png").
        path = next((self.base_dir / name for name in dict.fromkeys([source, unquote(source)])
                     if local and (self.base_dir / name).is_file()), None)
        if path is not None:
            image.set("src", _data_uri(path))
            return
        parent = parents[image]
        note = _missing(source)
        note.tail = image.tail
        parent.insert(list(parent).index(image), note)
        parent.remove(image)

    @staticmethod
    def _figure(paragraph: etree.Element, image: etree.Element) -> None:
        paragraph.tag = "figure"
        image.tail = None
        caption = image.get("alt", "").strip()
        if caption:
            etree.SubElement(paragraph, "figcaption").text = caption

    @staticmethod
    def _classify(table: etree.Element) -> None:
        """Right-align numbers (and n/a in columns of numbers); mark "significant" and "different" cells."""
        rows = [list(row) for row in table.iter("tr")]
        kinds: dict[etree.Element, str] = {}
        columns: dict[int, set[str]] = {}
        for row in rows:
            for column, cell in enumerate(row):
                if cell.tag != "td":
                    continue
                text = " ".join("".join(cell.itertext()).split())
                kind = "number" if NUMBER_CELL.match(text) else "placeholder" if PLACEHOLDER_CELL.match(text) \
                    else "text" if text else "empty"
                kinds[cell] = kind
                columns.setdefault(column, set()).add(kind)
                if SIGNIFICANT.search(text) or DIFFERENT.match(text):
                    cell.set("class", "significant")
        numeric = {column for column, seen in columns.items() if "number" in seen and "text" not in seen}
        for row in rows:
            for column, cell in enumerate(row):
                found = kinds.get(cell)
                if ((cell.tag == "th" and column in numeric) or found == "number"
                        or (found == "placeholder" and column in numeric)):
                    cell.set("class", " ".join(filter(None, [cell.get("class"), "num"])))


class _PageExtension(Extension):
    def __init__(self, base_dir: Path) -> None:
        super().__init__()
        self.base_dir = base_dir

    def extendMarkdown(self, md: markdown.Markdown) -> None:  # noqa: N802 (the markdown API's name)
        # Raw HTML is shown as text: a path like `a<b>` outside backticks must not become a tag.
        md.preprocessors.deregister("html_block")
        md.inlinePatterns.deregister("html")
        # After the inline patterns (priority 20), so images and cell text are final.
        md.treeprocessors.register(_PageTreeprocessor(md, self.base_dir), "cxrbench_page", 5)


def render_html(markdown_text: str, base_dir: Path, title: str) -> str:
    """The report's Markdown as one self-contained HTML page; images resolve relative to base_dir.

    A local image that does not exist becomes a visible "missing figure: PATH" note; so does a
    remote one, which is never fetched or linked.
    """
    body = markdown.markdown(markdown_text, extensions=["tables", "sane_lists", _PageExtension(Path(base_dir))],
                             output_format="html")
    return (
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
        "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n"
        f"<title>{html.escape(title)}</title>\n<style>{CSS}</style>\n</head>\n<body>\n{body}\n</body>\n</html>\n"
    )

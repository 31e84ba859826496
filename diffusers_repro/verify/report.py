"""The verify report: one self-contained HTML page that shows where regenerated images differ from their files.

The page needs nothing but itself: every image is inline as a ``data:`` URI, the style is inline, there is no
script, and a Content-Security-Policy forbids loading anything else (so it opens offline, and a hostile record
cannot make it fetch or run anything). Every string taken from a record (prompts, paths, field values) is
HTML-escaped.

At the top: the counts per verdict and this machine's environment against the recorded one. Then one card per
image, images that are not bitwise first: file name, verdict, credentials state (when the result carries it), the
file's image beside the regenerated one, the amplified difference heatmap when they are not bitwise (see
`heatmap.py`), and the differences (field, recorded, current).

Images up to ``thumbnail_size`` pixels on their longest side are shown as they are (lossless PNG, enlarged without
smoothing). Larger ones are shown as thumbnails (JPEG; the heatmap's thumbnail keeps the largest difference of each
block, so one changed pixel still shows) with the full images under a "full size" toggle: JPEG previews (quality 85)
of the file and the regeneration, and the heatmap lossless. The heatmap is measured on the exact pixels; lossless
copies of every regenerated image would make a report of a model change (every image "close") about as large as the
images themselves, which is not usable at 1,000 images of 512x512.
"""

from __future__ import annotations

import base64
import collections
import dataclasses
import datetime
import html
import io
import json
import math
import os
import re
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import PIL.Image

from ..files import read_pixels, to_pil_image, write_atomically
from .heatmap import difference_map, heatmap_colors

__all__ = ["THUMBNAIL_SIZE", "ReportEntry", "render_report", "report_entry", "write_report"]

THUMBNAIL_SIZE = 256
"""Longest side, in pixels, of the images shown in a card; larger images open full size on click."""

_VERDICT_ORDER = {"different": 0, "close": 1, "bitwise": 2}
_THUMBNAIL_QUALITY = 85
_PREVIEW_QUALITY = 85
_VALUE_LIMIT = 400
# Shown even when equal: what a reader checks first to know whether bits can match at all.
_MAIN_ENVIRONMENT_FIELDS = (
    "device",
    "device_name",
    "dtype",
    "torch_num_threads",
    "determinism.full_determinism",
    "versions.torch",
    "versions.diffusers",
    "platform",
)


@dataclasses.dataclass(frozen=True)
class _Figure:
    caption: str
    src: str
    width: int
    height: int
    full_src: str | None = None


@dataclasses.dataclass(frozen=True)
class ReportEntry:
    """One image of the report, ready to render: its texts and its images encoded as ``data:`` URIs.

    Built by `report_entry` from a `Reproduction` as soon as it is made, so that a long verify keeps the encoded
    pictures only, not the regenerated images.
    """

    path: str | None
    verdict: str
    summary: str
    file_edited: bool
    prompt: str | None
    seed: Any
    differences: tuple[tuple[str, str, str], ...]
    credentials: dict[str, Any] | None
    recorded_environment: dict[str, str]
    current_environment: dict[str, str]
    figures: tuple[_Figure, ...]
    size: tuple[int, int] | None
    note: str | None = None

    @property
    def bitwise(self) -> bool:
        return self.verdict == "bitwise"


# ----------------------------------------------------------------------------------------------------------------
# Images


def _data_uri(image: PIL.Image.Image, format: str) -> str:
    buffer = io.BytesIO()
    if format == "JPEG":
        image.convert("RGB").save(buffer, format="JPEG", quality=_PREVIEW_QUALITY)
        mime = "image/jpeg"
    else:
        image.save(buffer, format="PNG")
        mime = "image/png"
    return f"data:{mime};base64,{base64.b64encode(buffer.getvalue()).decode('ascii')}"


def _thumbnail_uri(image: PIL.Image.Image, size: int) -> tuple[str, int, int]:
    thumbnail = image.convert("RGB")
    thumbnail.thumbnail((size, size), PIL.Image.Resampling.LANCZOS)
    buffer = io.BytesIO()
    thumbnail.save(buffer, format="JPEG", quality=_THUMBNAIL_QUALITY)
    uri = f"data:image/jpeg;base64,{base64.b64encode(buffer.getvalue()).decode('ascii')}"
    return uri, thumbnail.width, thumbnail.height


def _heatmap_uri(difference: np.ndarray, scale: int) -> str:
    # A palette PNG: the heatmap has at most 256 colours, one per difference; a third of the bytes of RGB, lossless.
    picture = PIL.Image.fromarray(difference, mode="L")
    picture.putpalette(heatmap_colors(np.arange(256), scale).tobytes())
    return _data_uri(picture, "PNG")


def _heatmap_thumbnail(difference: np.ndarray, scale: int, size: tuple[int, int]) -> str:
    # Block maxima, not an average: a thumbnail must still show the one pixel that changed. Then enlarged without
    # smoothing to the images' thumbnail size, so that the three pictures line up.
    height, width = difference.shape
    factor = math.ceil(max(height / size[1], width / size[0]))
    padded = np.zeros((math.ceil(height / factor) * factor, math.ceil(width / factor) * factor), np.uint8)
    padded[:height, :width] = difference
    blocks = padded.reshape(padded.shape[0] // factor, factor, padded.shape[1] // factor, factor).max(axis=(1, 3))
    enlarged = PIL.Image.fromarray(blocks, mode="L").resize(size, PIL.Image.Resampling.NEAREST)
    return _heatmap_uri(np.asarray(enlarged), scale)


def _figure(caption: str, image: PIL.Image.Image, size: int) -> _Figure:
    if max(image.size) <= size:
        return _Figure(caption, _data_uri(image, "PNG"), image.width, image.height)
    src, width, height = _thumbnail_uri(image, size)
    return _Figure(caption, src, width, height, _data_uri(image, "JPEG"))


def _figures(result: Any, size: int) -> tuple[tuple[_Figure, ...], tuple[int, int] | None, str | None]:
    regenerated = to_pil_image(result.image)
    if result.path is None:
        note = "no file: the regeneration was compared with the record's output digest only"
        return (_figure("regenerated", regenerated, size),), regenerated.size, note
    # The pixels the verdict was about: the file as it was read once, never the path read again.
    pixels = np.asarray(result.file.image) if result.file is not None else read_pixels(result.path)
    file_image = PIL.Image.fromarray(pixels)
    # A lossy file is bitwise by its record and credentials, not by its pixels: it is shown with its difference.
    if result.bitwise_equal and result.pixels_equal is not False:
        return (_figure("file = regenerated, bit for bit", file_image, size),), file_image.size, None
    figures = [_figure("file", file_image, size), _figure("regenerated", regenerated, size)]
    if file_image.size != regenerated.size:
        (fw, fh), (rw, rh) = file_image.size, regenerated.size
        return tuple(figures), file_image.size, f"the sizes differ ({fw}x{fh} in the file, {rw}x{rh} regenerated)"
    difference = difference_map(file_image, regenerated)
    max_diff = int(difference.max(initial=0))
    scale = max(max_diff, 1)  # as difference_heatmap: the largest difference is the brightest colour
    caption = (
        f"difference x{255 / scale:.3g} (max {max_diff}/255, {np.count_nonzero(difference)} of {difference.size} "
        "pixels)"
    )
    if max(file_image.size) <= size:
        figures.append(_Figure(caption, _heatmap_uri(difference, scale), file_image.width, file_image.height))
    else:
        width, height = figures[0].width, figures[0].height
        src = _heatmap_thumbnail(difference, scale, (width, height))
        figures.append(_Figure(caption, src, width, height, _heatmap_uri(difference, scale)))
    return tuple(figures), file_image.size, None


# ----------------------------------------------------------------------------------------------------------------
# Entries


def _text(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, sort_keys=True, default=str)
    return text if len(text) <= _VALUE_LIMIT else text[:_VALUE_LIMIT] + f"... ({len(text)} characters)"


def _flatten(value: Any, prefix: str = "") -> dict[str, str]:
    if isinstance(value, dict) and value:
        flat: dict[str, str] = {}
        for key in sorted(value, key=str):
            flat.update(_flatten(value[key], f"{prefix}.{key}" if prefix else str(key)))
        return flat
    return {prefix: _text(value)}


def _credentials(result: Any) -> dict[str, Any] | None:
    credentials = getattr(result, "credentials", None)
    if credentials is None:
        return None
    data = credentials.to_dict() if hasattr(credentials, "to_dict") else credentials
    if not isinstance(data, dict):
        return {"state": _text(data)}
    failures = data.get("failures") or []
    return {
        "state": _text(data.get("state")),
        "signer": None if data.get("signer") is None else _text(data.get("signer")),
        "failures": [_text(failure) for failure in (failures if isinstance(failures, list) else [failures])],
    }


def report_entry(result: Any, *, thumbnail_size: int = THUMBNAIL_SIZE) -> ReportEntry:
    """Turns one `Reproduction` into a report entry: the texts to show and the pictures, encoded.

    Reads the file's pixels again (the result keeps its path, not its pixels) and measures the heatmap when the
    regeneration is not bitwise.

    Args:
        result (`Reproduction`): What `reproduce` returned.
        thumbnail_size (`int`, *optional*, defaults to 256): Longest side of the pictures in the card; larger images
            get a thumbnail and their full image on click.

    Example:

    ```py
    >>> from diffusers_repro.replay import reproduce
    >>> from diffusers_repro.report import report_entry, write_report
    >>> entries = [report_entry(reproduce(path)) for path in ["outputs/00000-seed42.png"]]  # doctest: +SKIP
    >>> write_report(entries, "report.html")  # doctest: +SKIP
    ```
    """
    if isinstance(thumbnail_size, bool) or not isinstance(thumbnail_size, int) or thumbnail_size < 16:
        raise ValueError(f"thumbnail_size must be an integer of at least 16 (pixels), got {thumbnail_size!r}")
    for name in ("image", "recorded", "provenance", "verdict", "differences"):
        if not hasattr(result, name):
            raise TypeError(f"result must be a diffusers_repro.Reproduction, got {type(result).__name__}")
    figures, size, note = _figures(result, thumbnail_size)
    recipe = getattr(result, "recipe", None)
    if result.recorded is not None:
        prompt, seed = result.recorded.call_arguments.get("prompt"), result.recorded.seed
        recorded_environment = _flatten(result.recorded.environment)
    else:  # another tool's image: its recipe says what was asked, and holds no environment
        prompt, seed = (recipe.prompt, recipe.seed) if recipe is not None else (None, None)
        recorded_environment = {}
    current_environment = _flatten(result.provenance.environment) if result.provenance is not None else {}
    return ReportEntry(
        path=None if result.path is None else str(result.path),
        verdict=str(result.verdict),
        summary=str(result.summary),
        file_edited=bool(result.file_edited),
        prompt=None if prompt is None else _text(prompt),
        seed=seed,
        differences=tuple((str(field), _text(old), _text(new)) for field, old, new in result.differences),
        credentials=_credentials(result),
        recorded_environment=recorded_environment,
        current_environment=current_environment,
        figures=figures,
        size=size,
        note=note,
    )


# ----------------------------------------------------------------------------------------------------------------
# The page

_STYLE = """
:root { color-scheme: light; --bg: #f4f4f5; --card: #fff; --text: #18181b; --muted: #52525b; --line: #e4e4e7;
  --bitwise: #15803d; --close: #b45309; --different: #b91c1c; }
* { box-sizing: border-box; }
body { margin: 0; padding: 24px; background: var(--bg); color: var(--text);
  font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; }
h1 { font-size: 22px; margin: 0 0 4px; } h2 { font-size: 16px; margin: 24px 0 8px; }
.muted { color: var(--muted); }
.counts { display: flex; gap: 12px; flex-wrap: wrap; margin: 16px 0; }
.count { background: var(--card); border: 1px solid var(--line); border-radius: 8px; padding: 10px 16px; }
.count b { display: block; font-size: 24px; }
.badge { display: inline-block; padding: 1px 10px; border-radius: 999px; color: #fff; font-weight: 600; }
.badge.bitwise { background: var(--bitwise); } .badge.close { background: var(--close); }
.badge.different { background: var(--different); }
.badge.other { background: #3f3f46; } .badge.warn { background: #7c2d12; }
.count.bitwise b { color: var(--bitwise); } .count.close b { color: var(--close); }
.count.different b { color: var(--different); }
table { border-collapse: collapse; background: var(--card); font-size: 13px; }
th, td { border: 1px solid var(--line); padding: 3px 8px; text-align: left; vertical-align: top;
  overflow-wrap: anywhere; }
th { background: #fafafa; }
tr.differs td { background: #fef3c7; }
td:first-child { white-space: nowrap; }
.legend { display: inline-flex; align-items: center; gap: 6px; font-size: 12px; color: var(--muted); }
.ramp { display: inline-block; width: 180px; height: 10px; border: 1px solid var(--line);
  background: linear-gradient(to right, #000 0 8%, RAMP); }
code { font: 12px ui-monospace, "SFMono-Regular", Menlo, Consolas, monospace; }
.card { background: var(--card); border: 1px solid var(--line); border-left: 6px solid var(--line);
  border-radius: 8px; padding: 12px 16px; margin: 12px 0; }
.card.bitwise { border-left-color: var(--bitwise); } .card.close { border-left-color: var(--close); }
.card.different { border-left-color: var(--different); }
.card h3 { font-size: 15px; margin: 0 0 6px; display: flex; gap: 10px; align-items: center; flex-wrap: wrap; }
.figures { display: flex; gap: 16px; flex-wrap: wrap; align-items: flex-start; margin: 10px 0; }
figure { margin: 0; } figcaption { font-size: 12px; color: var(--muted); max-width: 280px; }
figure img { display: block; border: 1px solid var(--line); image-rendering: pixelated; background: #000; }
details.full summary { cursor: pointer; color: #1d4ed8; margin: 6px 0; }
details.full img { image-rendering: auto; max-width: none; }
.prompt { font-style: italic; }
"""


def _ramp_css() -> str:
    # The heatmap's colours as a CSS gradient, for the legend: black for "equal", then 1 step up to the largest.
    colors = heatmap_colors(np.arange(1, 11), 10)
    return ", ".join(f"rgb({r}, {g}, {b}) {8 + 92 * i / 9:.0f}%" for i, (r, g, b) in enumerate(colors.tolist()))


# Bidi overrides and isolates (U+202A-U+202E, U+2066-U+2069) and other invisible format or control characters from a
# record would reorder or hide what the page shows: each is shown as a visible code instead.
_INVISIBLE = re.compile(r"[\u0000-\u0008\u000b-\u001f\u007f-\u009f\u200b-\u200f\u202a-\u202e\u2060-\u206f\ufeff]")


def _e(value: Any) -> str:
    text = _INVISIBLE.sub(lambda match: f"<U+{ord(match.group()):04X}>", str(value))
    return html.escape(text, quote=True)


def _display_size(width: int, height: int, box: int) -> tuple[int, int]:
    # Small images (a tiny model's 64x64) are enlarged by a whole factor, so their pixels stay square and sharp.
    factor = max(1, box // max(width, height, 1))
    return width * factor, height * factor


def _figure_html(figure: _Figure, box: int, full: bool = False) -> str:
    if full:
        return (
            f'<figure><img src="{figure.full_src}" alt="{_e(figure.caption)} (full size)" loading="lazy">'
            f"<figcaption>{_e(figure.caption)}</figcaption></figure>"
        )
    width, height = _display_size(figure.width, figure.height, box)
    return (
        f'<figure><img src="{figure.src}" width="{width}" height="{height}" alt="{_e(figure.caption)}" '
        f'loading="lazy"><figcaption>{_e(figure.caption)}</figcaption></figure>'
    )


def _credentials_html(credentials: dict[str, Any]) -> str:
    state = credentials.get("state")
    kind = {"trusted": "bitwise", "valid": "close", "tampered": "different"}.get(str(state), "other")
    parts = [f'<span class="badge {kind}">credentials: {_e(state)}</span>']
    if credentials.get("signer"):
        parts.append(f'<span class="muted">signed by {_e(credentials["signer"])}</span>')
    failures = credentials.get("failures") or []
    if failures:
        parts.append('<span class="muted">' + "; ".join(_e(failure) for failure in failures) + "</span>")
    return " ".join(parts)


def _differences_html(differences: Sequence[tuple[str, str, str]]) -> str:
    if not differences:
        return '<p class="muted">no differences between the recorded and the current recipe and environment</p>'
    rows = "".join(
        f"<tr><td><code>{_e(field)}</code></td><td><code>{_e(old)}</code></td><td><code>{_e(new)}</code></td></tr>"
        for field, old, new in differences
    )
    return f"<table><tr><th>field</th><th>recorded</th><th>current</th></tr>{rows}</table>"


def _entry_html(entry: ReportEntry, number: int, box: int) -> str:
    title = entry.path if entry.path is not None else "(a record without a file)"
    header = [f'<span class="badge {_e(entry.verdict)}">{_e(entry.verdict)}</span>', f"<code>{_e(title)}</code>"]
    if entry.file_edited:
        header.append('<span class="badge warn">file edited after it was written</span>')
    if entry.credentials is not None:
        header.append(_credentials_html(entry.credentials))
    details = [f"<span>{_e(entry.summary)}</span>", f"seed {_e(entry.seed)}"]
    if entry.size is not None:
        details.append(f"{entry.size[0]}x{entry.size[1]}")
    if entry.prompt is not None:
        details.append(f'prompt <span class="prompt">{_e(entry.prompt)}</span>')
    parts = [
        f'<section class="card {_e(entry.verdict)}" id="image-{number}">',
        f"<h3>{' '.join(header)}</h3>",
        f'<div class="muted">{" &middot; ".join(details)}</div>',
        '<div class="figures">' + "".join(_figure_html(figure, box) for figure in entry.figures) + "</div>",
    ]
    if entry.note:
        parts.append(f'<p class="muted">{_e(entry.note)}</p>')
    full = [figure for figure in entry.figures if figure.full_src is not None]
    if full:
        kind = "JPEG previews; the heatmap is exact" if not entry.bitwise else "JPEG preview; the file is exact"
        parts.append(
            f'<details class="full"><summary>full size ({kind})</summary><div class="figures">'
            + "".join(_figure_html(figure, box, full=True) for figure in full)
            + "</div></details>"
        )
    if not entry.bitwise or entry.differences:
        parts.append(_differences_html(entry.differences))
    parts.append("</section>")
    return "\n".join(parts)


def _values(counter: collections.Counter) -> str:
    if len(counter) == 1:
        return next(iter(counter))
    return "; ".join(f"{value} ({count} images)" for value, count in counter.most_common())


def _environment_html(entries: Sequence[ReportEntry]) -> str:
    recorded: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    current: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    for entry in entries:
        for field, value in entry.recorded_environment.items():
            recorded[field][value] += 1
        for field, value in entry.current_environment.items():
            current[field][value] += 1
    rows = []
    for field in sorted(recorded.keys() | current.keys()):
        old, new = recorded.get(field, collections.Counter()), current.get(field, collections.Counter())
        rows.append((old != new, field, _values(old) if old else "-", _values(new) if new else "-"))
    # The fields that differ explain the verdicts: they come first, with the main ones; the rest is folded away.
    shown = [row for row in rows if row[0] or row[1] in _MAIN_ENVIRONMENT_FIELDS]
    shown.sort(key=lambda row: not row[0])
    folded = [row for row in rows if row not in shown]
    differing = sum(row[0] for row in rows)
    header = "<tr><th>field</th><th>recorded</th><th>this machine</th></tr>"
    html_ = (
        f'<h2>Environment: this machine against the recorded one</h2><p class="muted">{differing} of {len(rows)} '
        f'fields differ (highlighted)</p><table class="environment">{header}{_environment_rows(shown)}</table>'
    )
    if folded:
        html_ += (
            f'<details class="full"><summary>the {len(folded)} other fields (equal)</summary>'
            f'<table class="environment">{header}{_environment_rows(folded)}</table></details>'
        )
    return html_


def _environment_rows(rows: Sequence[tuple[bool, str, str, str]]) -> str:
    return "".join(
        f'<tr class="{"differs" if differs else ""}"><td><code>{_e(field)}</code></td>'
        f"<td><code>{_e(old)}</code></td><td><code>{_e(new)}</code></td></tr>"
        for differs, field, old, new in rows
    )


def render_report(entries: Iterable[Any], *, title: str = "diffusers-repro verify report") -> str:
    """The report as one HTML string (see `write_report`).

    Args:
        entries (iterable of `ReportEntry` or `Reproduction`): The images, in any order; the page lists those that
            are not bitwise first (different, then close), in the given order within each verdict.
        title (`str`, *optional*): The page's title.

    Example:

    ```py
    >>> from diffusers_repro.report import render_report
    >>> "0 image(s)" in render_report([])
    True
    ```
    """
    entries = [entry if isinstance(entry, ReportEntry) else report_entry(entry) for entry in entries]
    box = THUMBNAIL_SIZE
    ordered = sorted(enumerate(entries), key=lambda item: (_VERDICT_ORDER.get(item[1].verdict, -1), item[0]))
    counts = collections.Counter(entry.verdict for entry in entries)
    verdicts = ["bitwise", "close", "different"] + sorted(set(counts) - set(_VERDICT_ORDER))
    tiles = [f'<div class="count"><b>{len(entries)}</b>image(s)</div>'] + [
        f'<div class="count {_e(verdict)}"><b>{counts.get(verdict, 0)}</b>{_e(verdict)}</div>' for verdict in verdicts
    ]
    edited = sum(entry.file_edited for entry in entries)
    if edited:
        tiles.append(f'<div class="count different"><b>{edited}</b>file(s) edited after writing</div>')
    states = collections.Counter(entry.credentials["state"] for entry in entries if entry.credentials is not None)
    for state, count in sorted(states.items()):
        tiles.append(f'<div class="count"><b>{count}</b>credentials {_e(state)}</div>')
    created = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    from ..version import __version__

    head = (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        # Nothing but inline pictures and the inline style may load: no network, no script, whatever a record holds.
        '<meta http-equiv="Content-Security-Policy" content="default-src \'none\'; img-src data:; '
        "style-src 'unsafe-inline'\">"
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{_e(title)}</title><style>{_STYLE.replace('RAMP', _ramp_css())}</style></head><body>"
    )
    intro = (
        f'<h1>{_e(title)}</h1><div class="muted">{len(entries)} image(s), written {created} by diffusers-repro '
        f"{_e(__version__)}; images that are not bitwise first.</div>"
        '<div class="legend">heatmaps: equal <span class="ramp"></span> the largest difference of the pair (one '
        "8-bit step or more: amplified)</div>"
        f'<div class="counts">{"".join(tiles)}</div>'
    )
    environment = _environment_html(entries) if entries else ""
    cards = "\n".join(_entry_html(entry, number, box) for number, entry in ordered)
    images = f"<h2>Images</h2>\n{cards}" if entries else ""
    return f"{head}\n{intro}\n{environment}\n{images}\n</body></html>\n"


def write_report(
    entries: Iterable[Any], path: str | os.PathLike, *, title: str = "diffusers-repro verify report"
) -> Path:
    """Writes the verify report as one self-contained HTML file (atomically).

    The file opens offline in any browser: images inline as ``data:`` URIs, inline style, no script, nothing
    loaded from the network.

    Args:
        entries (iterable of `ReportEntry` or `Reproduction`): The images (see `render_report`); build entries
            with `report_entry` as results come to keep the memory of a long run small.
        path (`str` or `os.PathLike`): The HTML file to write.
        title (`str`, *optional*): The page's title.

    Returns:
        `pathlib.Path`: the file written.

    Example:

    ```py
    >>> from diffusers_repro.replay import reproduce
    >>> from diffusers_repro.report import write_report
    >>> write_report([reproduce("outputs/00000-seed42.png")], "report.html")  # doctest: +SKIP
    PosixPath('report.html')
    ```
    """
    path = Path(path)
    page = render_report(entries, title=title).encode("utf-8")
    write_atomically(path, lambda handle: handle.write(page))
    return path

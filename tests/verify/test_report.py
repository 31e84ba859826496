"""The verify report (report.py), ``verify --report``, ``diff --heatmap`` and verify's progress bar.

The module generates one small folder with the embedded tiny model (a prompt that is hostile HTML among them), edits
two files' pixels (one a lot, one by a single 8-bit step) and verifies it with ``--report``; the tests read the page
that wrote. One test renders it in headless Chromium.
"""

from __future__ import annotations

import base64
import dataclasses
import html.parser
import io
import json
import re
import shutil
import subprocess
import sys

import numpy as np
import PIL.Image
import PIL.PngImagePlugin
import pytest

from diffusers_repro.cli import main
from diffusers_repro.files.imagefile import read_pixels
from diffusers_repro.records.provenance import Provenance
from diffusers_repro.verify.heatmap import HEATMAP_KEY, difference_heatmap, difference_map
from diffusers_repro.verify.replay import reproduce
from diffusers_repro.verify.report import THUMBNAIL_SIZE, ReportEntry, render_report, report_entry, write_report
from diffusers_repro.verify.reproduction import Difference, Reproduction

HOSTILE = '<script>alert("x")</script> & <img src="https://evil.example/x.png">'
PATCH = (slice(20, 34), slice(36, 52))


def run(capsys, *argv):
    code = main([str(arg) for arg in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def edit_pixels(path, edit):
    """Changes a file's pixels in place, keeping its text chunks (record, pixel digest): edited after writing."""
    with PIL.Image.open(path) as image:
        info = PIL.PngImagePlugin.PngInfo()
        for key, value in image.text.items():
            info.add_text(key, value)
        pixels = np.asarray(image.convert("RGB")).copy()
    edit(pixels)
    PIL.Image.fromarray(pixels).save(path, pnginfo=info)


def brighten_patch(pixels):
    pixels[PATCH] = np.clip(pixels[PATCH].astype(int) + 60, 0, 255)


def one_step(pixels):
    pixels[5, 7, 0] = pixels[5, 7, 0] + 1 if pixels[5, 7, 0] < 255 else 254


@pytest.fixture(scope="module")
def folders(tmp_path_factory, tiny_sd_path):
    """``clean``: 2 prompts x 2 seeds as generated; ``edited``: the same with job 2 patched and job 1 off by a step."""
    root = tmp_path_factory.mktemp("report")
    clean = root / "clean"
    code = main(
        ["generate", "--model", str(tiny_sd_path), "--prompt", HOSTILE, "--prompt", "a bear", "--seeds", "0,1"]
        + ["--steps", "2", "--threads", "1", "--no-progress", "--out", str(clean)]
    )
    assert code == 0
    edited = root / "edited"
    edited.mkdir()
    for path in sorted(clean.glob("*.png")):
        shutil.copy(path, edited / path.name)
    edit_pixels(edited / "job000002-seed0.png", brighten_patch)
    edit_pixels(edited / "job000001-seed1.png", one_step)
    return clean, edited


@pytest.fixture(scope="module")
def verified(folders, tmp_path_factory):
    """``verify edited --report``: exit code, stdout, the page."""
    _, edited = folders
    report = tmp_path_factory.mktemp("page") / "report.html"
    code = main(["verify", str(edited), "--report", str(report)])
    return code, report.read_text(encoding="utf-8"), report


class _Page(html.parser.HTMLParser):
    """Every start tag with its attributes, and the text."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict[str, str]]] = []
        self.text: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))

    def handle_data(self, data):
        self.text.append(data)


def parse(page: str) -> _Page:
    parser = _Page()
    parser.feed(page)
    return parser


def cards(page: str) -> list[str]:
    return re.findall(r'<section class="card [a-z]+".*?</section>', page, flags=re.S)


def decode(uri: str) -> PIL.Image.Image:
    header, data = uri.split(",", 1)
    assert header in ("data:image/png;base64", "data:image/jpeg;base64"), header
    return PIL.Image.open(io.BytesIO(base64.b64decode(data)))


def images_of(card: str) -> dict[str, str]:
    """caption -> src of the card's pictures (full-size ones under ``full:``)."""
    found = {}
    for src, alt in re.findall(r'<img src="([^"]+)"[^>]*alt="([^"]*)"', card):
        found[html.unescape(alt)] = src
    return found


# --------------------------------------------------------------------------------------------------------------------
# The page


def test_report_loads_nothing_from_outside_and_runs_nothing(verified):
    _, page, _ = verified
    parsed = parse(page)
    tags = [tag for tag, _ in parsed.tags]
    assert "script" not in tags and "link" not in tags and "iframe" not in tags and "object" not in tags
    assert "<script" not in page.lower()
    for tag, attrs in parsed.tags:
        for name in ("src", "href", "srcset", "action", "poster"):
            if name in attrs:
                assert attrs[name].startswith("data:image/"), (tag, name, attrs[name][:80])
    assert "@import" not in page and not re.search(r"url\((?!data:)", page)
    assert not re.search(r"""(src|href)\s*=\s*["']?https?://""", page, flags=re.I)
    images = [attrs for tag, attrs in parsed.tags if tag == "img"]
    assert len(images) >= 4 and all(attrs["src"].startswith("data:image/") for attrs in images)
    csp = [
        attrs for tag, attrs in parsed.tags if tag == "meta" and attrs.get("http-equiv") == "Content-Security-Policy"
    ]
    assert csp == [
        {
            "http-equiv": "Content-Security-Policy",
            "content": "default-src 'none'; img-src data:; style-src 'unsafe-inline'",
        }
    ]


def test_report_escapes_the_prompts_of_records(verified):
    _, page, _ = verified
    assert HOSTILE not in page
    assert "evil.example" in page  # shown, as text
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; &amp; &lt;img src=&quot;https://evil.example" in page
    assert HOSTILE in "".join(parse(page).text)  # what a reader sees is the prompt as written


def test_report_has_every_file_and_verdict_not_bitwise_first(verified, folders):
    code, page, _ = verified
    _, edited = folders
    assert code == 1
    found = cards(page)
    verdicts = [re.match(r'<section class="card ([a-z]+)"', card).group(1) for card in found]
    assert verdicts == ["different", "close", "bitwise", "bitwise"]
    names = [re.search(r"<code>([^<]+\.png)</code>", card).group(1) for card in found]
    assert names[:2] == [str(edited / "job000002-seed0.png"), str(edited / "job000001-seed1.png")]
    assert sorted(names) == sorted(str(path) for path in edited.glob("*.png"))
    for verdict in ("different", "close", "bitwise"):
        assert f'<span class="badge {verdict}">{verdict}</span>' in page
    assert '<div class="count"><b>4</b>image(s)</div>' in page
    assert '<div class="count bitwise"><b>2</b>bitwise</div>' in page
    assert '<div class="count close"><b>1</b>close</div>' in page
    assert '<div class="count different"><b>1</b>different</div>' in page
    assert '<div class="count different"><b>2</b>file(s) edited after writing</div>' in page


def test_report_shows_the_file_beside_the_regeneration_and_the_heatmap_where_they_differ(verified, folders):
    _, page, _ = verified
    clean, edited = folders
    different, close, bitwise, _ = cards(page)
    pictures = images_of(different)
    assert [caption.split(" ")[0] for caption in pictures] == ["file", "regenerated", "difference"]
    file_image, regenerated = (np.asarray(decode(pictures[name]).convert("RGB")) for name in ("file", "regenerated"))
    assert (file_image == read_pixels(edited / "job000002-seed0.png")).all()  # lossless, exact
    assert (regenerated == read_pixels(clean / "job000002-seed0.png")).all()
    heatmap_caption = next(caption for caption in pictures if caption.startswith("difference"))
    decoded = decode(pictures[heatmap_caption])
    assert decoded.mode == "P"  # a palette PNG: lossless, a third of RGB's bytes
    heatmap = np.asarray(decoded.convert("RGB"))
    assert (heatmap == np.asarray(difference_heatmap(file_image, regenerated).image)).all()
    assert heatmap.shape == (64, 64, 3)
    changed = heatmap.any(axis=2)
    expected = difference_map(file_image, regenerated) > 0
    assert (changed == expected).all() and changed[PATCH].all() and not changed[:20].any()
    max_diff = int(difference_map(file_image, regenerated).max())
    assert (
        heatmap_caption
        == f"difference x{255 / max_diff:.3g} (max {max_diff}/255, {int(expected.sum())} of 4096 pixels)"
    )
    # The single changed step is a visible pixel of a heatmap amplified 255 times.
    close_pictures = images_of(close)
    assert "difference x255 (max 1/255, 1 of 4096 pixels)" in close_pictures
    assert '<span class="badge warn">file edited after it was written</span>' in different
    # A bitwise image is shown once (file and regeneration are the same bits), without a heatmap.
    assert list(images_of(bitwise)) == ["file = regenerated, bit for bit"]
    assert "difference" not in " ".join(images_of(bitwise))


def test_report_lists_the_differences_and_the_environment(verified):
    _, page, _ = verified
    different = cards(page)[0]
    assert "<th>field</th><th>recorded</th><th>current</th>" in different
    assert "<td><code>file.pixel_digest</code></td>" in different
    assert "Environment: this machine against the recorded one" in page
    assert "<th>field</th><th>recorded</th><th>this machine</th>" in page
    assert re.search(r"<td><code>torch_num_threads</code></td><td><code>1</code></td><td><code>1</code></td>", page)
    assert "0 of " in page and " fields differ (highlighted)" in page


def test_report_keeps_the_exit_status_of_verify(capsys, verified, folders, tmp_path):
    clean, edited = folders
    code_with, _, _ = verified
    assert run(capsys, "verify", edited)[0] == code_with == 1
    code, out, _ = run(capsys, "verify", clean, "--report", tmp_path / "clean.html")
    assert code == run(capsys, "verify", clean)[0] == 0
    assert out.splitlines()[-1] == f"report: {tmp_path / 'clean.html'}"
    assert cards((tmp_path / "clean.html").read_text())[0].startswith('<section class="card bitwise"')


def test_report_with_json_keeps_stdout_json(capsys, folders, tmp_path):
    clean, _ = folders
    code, out, _ = run(capsys, "verify", clean, "--json", "--report", tmp_path / "r.html")
    assert code == 0 and len(cards((tmp_path / "r.html").read_text())) == 4
    assert [sorted(json.loads(line))[0] for line in out.splitlines()] == ["accepted"] * 4 + ["summary"]


def test_demo_writes_its_report(capsys, tmp_path, tiny_cache, monkeypatch):
    monkeypatch.setenv("DIFFUSERS_REPRO_CACHE", str(tiny_cache))
    code, out, _ = run(capsys, "demo", "--out", tmp_path / "demo", "--steps", "2")
    assert code == 0
    assert f"   the report, each file beside its regeneration: {tmp_path / 'demo' / 'report.html'}" in out.splitlines()
    page = (tmp_path / "demo" / "report.html").read_text(encoding="utf-8")
    assert [card[: len('<section class="card bitwise"')] for card in cards(page)] == [
        '<section class="card bitwise"'
    ] * 4


def test_report_path_is_checked_before_any_work(capsys, folders, tmp_path):
    clean, _ = folders
    code, out, err = run(capsys, "verify", clean, "--report", tmp_path / "missing" / "r.html")
    assert code == 2 and out == ""
    assert (
        err == f"diffusers-repro: error: --report '{tmp_path / 'missing' / 'r.html'}': the folder "
        f"'{tmp_path / 'missing'}' does not exist\n"
    )
    code, _, err = run(capsys, "verify", clean, "--report", tmp_path)
    assert code == 2
    assert err == (
        f"diffusers-repro: error: --report '{tmp_path}' is a folder; expected an HTML file to write, e.g. "
        "report.html\n"
    )


# --------------------------------------------------------------------------------------------------------------------
# Entries built in code: credentials, large images, no file


@dataclasses.dataclass
class _Credentials:
    state: str
    signer: str | None
    failures: list[str]

    def to_dict(self):
        return {"state": self.state, "signer": self.signer, "failures": self.failures}


@pytest.fixture(scope="module")
def reproduction(folders):
    clean, _ = folders
    return reproduce(clean / "job000000-seed0.png")


def test_report_shows_credentials_when_the_result_carries_them(reproduction):
    # Files written by diffusers-repro are signed by this machine's identity: the real result says so.
    assert '<span class="badge bitwise">credentials: trusted</span>' in render_report([reproduction])
    plain = render_report([dataclasses.replace(reproduction, credentials=None)])
    assert "credentials" not in plain
    signed = dataclasses.replace(reproduction)
    signed.credentials = _Credentials("trusted", "Example Studio <ca@example.com>", [])
    tampered = dataclasses.replace(reproduction)
    tampered.credentials = _Credentials("tampered", None, ["assertion.dataHash.mismatch", "<b>bold</b>"])
    page = render_report([signed, tampered])
    assert '<span class="badge bitwise">credentials: trusted</span>' in page
    assert '<span class="muted">signed by Example Studio &lt;ca@example.com&gt;</span>' in page
    assert '<span class="badge different">credentials: tampered</span>' in page
    assert "assertion.dataHash.mismatch; &lt;b&gt;bold&lt;/b&gt;" in page and "<b>bold</b>" not in page
    assert '<div class="count"><b>1</b>credentials tampered</div>' in page
    assert '<div class="count"><b>1</b>credentials trusted</div>' in page
    assert report_entry(tampered).credentials == {
        "state": "tampered",
        "signer": None,
        "failures": ["assertion.dataHash.mismatch", "<b>bold</b>"],
    }


def synthetic(tmp_path, name, file_pixels, regenerated_pixels, *, prompt="a fox", with_file=True):
    path = tmp_path / name
    PIL.Image.fromarray(file_pixels).save(path)
    equal = file_pixels.shape == regenerated_pixels.shape and (file_pixels == regenerated_pixels).all()
    record = Provenance(7, "seed", {"call": {"prompt": prompt}}, {"device": "cpu", "torch_num_threads": 1}, {})
    current = Provenance(7, "seed", {"call": {"prompt": prompt}}, {"device": "cpu", "torch_num_threads": 4}, {})
    return Reproduction(
        image=PIL.Image.fromarray(regenerated_pixels),
        provenance=current,
        recorded=record,
        bitwise_equal=bool(equal),
        output_digest_equal=None,
        pixels_equal=bool(equal) if with_file else None,
        max_abs_diff=None if equal else 1.0,
        psnr=None,
        verdict="bitwise" if equal else "different",
        differences=[Difference("environment.torch_num_threads", 1, 4)],
        tolerance=2 / 255,
        path=path if with_file else None,
    )


def test_large_images_get_thumbnails_and_their_full_images_on_click(tmp_path):
    rng = np.random.default_rng(0)
    file_pixels = rng.integers(0, 256, (400, 600, 3), dtype=np.uint8)
    regenerated = file_pixels.copy()
    regenerated[300, 450, 2] ^= 1  # one pixel, one step: the thumbnail must still show it
    entry = report_entry(synthetic(tmp_path, "big.png", file_pixels, regenerated))
    assert [figure.caption.split(" ")[0] for figure in entry.figures] == ["file", "regenerated", "difference"]
    for figure in entry.figures:
        assert max(figure.width, figure.height) == THUMBNAIL_SIZE and figure.full_src is not None
    assert decode(entry.figures[0].src).format == "JPEG"
    full_file, full_regenerated, full_heatmap = (decode(figure.full_src) for figure in entry.figures)
    assert full_file.format == full_regenerated.format == "JPEG" and full_file.size == (600, 400)
    assert full_heatmap.format == "PNG" and full_heatmap.size == (600, 400)
    assert (
        int(np.asarray(full_heatmap.convert("RGB")).any(axis=2).sum()) == 1
    )  # exact: measured before any compression
    thumbnail = np.asarray(decode(entry.figures[2].src).convert("RGB"))
    assert thumbnail.shape == (171, 256, 3)  # the images' thumbnail size
    # The 3x3 block of (300, 450), enlarged from 134x200 to 171x256 without smoothing: one or two pixels each way.
    rows, columns = np.nonzero(thumbnail.any(axis=2))
    assert set(rows.tolist()) <= {127, 128, 129} and set(columns.tolist()) <= {191, 192, 193} and len(rows) >= 1
    card = cards(render_report([entry]))[0]
    assert '<details class="full"><summary>full size (JPEG previews; the heatmap is exact)</summary>' in card
    assert entry.figures[0].full_src in card and entry.figures[2].full_src in card


def test_bitwise_large_image_has_one_picture_and_a_jpeg_preview(tmp_path):
    pixels = np.random.default_rng(1).integers(0, 256, (300, 300, 3), dtype=np.uint8)
    entry = report_entry(synthetic(tmp_path, "same.png", pixels, pixels.copy()))
    assert [figure.caption for figure in entry.figures] == ["file = regenerated, bit for bit"]
    assert decode(entry.figures[0].full_src).format == "JPEG"
    assert "full size (JPEG preview; the file is exact)" in render_report([entry])


def test_small_images_are_embedded_as_they_are(tmp_path):
    pixels = np.random.default_rng(2).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    entry = report_entry(synthetic(tmp_path, "small.png", pixels, pixels.copy()))
    (figure,) = entry.figures
    assert figure.full_src is None and (np.asarray(decode(figure.src)) == pixels).all()
    assert 'width="256" height="256"' in render_report([entry])  # enlarged 4x, without smoothing
    assert "<details" not in cards(render_report([entry]))[0]


def test_entries_without_a_file_or_of_another_size_say_why_there_is_no_heatmap(tmp_path):
    pixels = np.zeros((32, 32, 3), np.uint8)
    alone = report_entry(synthetic(tmp_path, "a.png", pixels, pixels + 1, with_file=False))
    assert [figure.caption for figure in alone.figures] == ["regenerated"]
    assert alone.note == "no file: the regeneration was compared with the record's output digest only"
    resized = report_entry(synthetic(tmp_path, "b.png", pixels, np.zeros((16, 32, 3), np.uint8)))
    assert [figure.caption for figure in resized.figures] == ["file", "regenerated"]
    assert resized.note == "the sizes differ (32x32 in the file, 32x16 regenerated)"
    assert "the sizes differ (32x32 in the file, 32x16 regenerated)" in render_report([resized])


def test_long_values_are_shortened(tmp_path):
    pixels = np.zeros((8, 8, 3), np.uint8)
    entry = report_entry(synthetic(tmp_path, "long.png", pixels, pixels, prompt="x" * 1000))
    assert entry.prompt == "x" * 400 + "... (1000 characters)"


def test_report_entry_refuses_bad_arguments(reproduction):
    with pytest.raises(ValueError) as error:
        report_entry(reproduction, thumbnail_size=8)
    assert str(error.value) == "thumbnail_size must be an integer of at least 16 (pixels), got 8"
    with pytest.raises(TypeError) as error:
        report_entry("job000000-seed0.png")
    assert str(error.value) == "result must be a diffusers_repro.Reproduction, got str"


def test_write_report_is_atomic_and_takes_results_or_entries(reproduction, tmp_path):
    path = write_report([reproduction, report_entry(reproduction)], tmp_path / "r.html")
    assert path == tmp_path / "r.html" and sorted(p.name for p in tmp_path.iterdir()) == ["r.html"]
    assert len(cards(path.read_text(encoding="utf-8"))) == 2
    assert isinstance(report_entry(reproduction), ReportEntry)
    empty = render_report([])
    assert "0 image(s)" in empty and "<section" not in empty


# --------------------------------------------------------------------------------------------------------------------
# diff --heatmap


def test_diff_heatmap_writes_the_difference_picture_beside_the_text_diff(capsys, folders, tmp_path):
    clean, edited = folders
    out = tmp_path / "heatmap.png"
    code, text, _ = run(
        capsys, "diff", clean / "job000002-seed0.png", edited / "job000002-seed0.png", "--heatmap", out
    )
    assert code == 1  # the records are the same; the pixels are not
    expected = difference_map(read_pixels(clean / "job000002-seed0.png"), read_pixels(edited / "job000002-seed0.png"))
    changed = int(np.count_nonzero(expected))
    lines = text.splitlines()
    assert (
        lines[0]
        == f"the records of {clean / 'job000002-seed0.png'} and {edited / 'job000002-seed0.png'} are identical"
    )
    assert lines[1].startswith(
        f"pixels: max abs diff {int(expected.max()) / 255:.4g} ({int(expected.max())}/255), PSNR "
    )
    assert lines[1].endswith(f" dB, {changed} of 4096 pixels differ")
    assert lines[2] == f"heatmap: {out} (max diff {int(expected.max())}/255, {changed} of 4096 pixels differ)"
    with PIL.Image.open(out) as image:
        assert image.width == 64 and image.height > 64  # the map, then the scale below it
        picture = np.asarray(image.convert("RGB"))
        figures = eval_json(image.text[HEATMAP_KEY])
    assert (picture[:64, :64].any(axis=2) == (expected > 0)).all()
    assert figures == {"width": 64, "height": 64, "max_diff": int(expected.max()), "scale": int(expected.max())}
    assert len({tuple(color) for color in picture[64:].reshape(-1, 3).tolist()}) > 20  # the scale is drawn


def eval_json(text):
    data = json.loads(text)
    return {key: data[key] for key in ("width", "height", "max_diff", "scale")}


def test_diff_heatmap_of_different_records_keeps_exit_1_and_identical_pixels(capsys, folders, tmp_path):
    clean, _ = folders
    a, b = clean / "job000000-seed0.png", clean / "job000001-seed1.png"
    code, text, _ = run(capsys, "diff", a, b, "--heatmap", tmp_path / "h.png")
    assert code == 1 and "fields differ between" in text and text.splitlines()[-1].startswith("heatmap: ")
    code, text, _ = run(capsys, "diff", a, a, "--heatmap", tmp_path / "same.png")
    assert code == 0 and text.splitlines()[-1] == f"heatmap: {tmp_path / 'same.png'} (the pixels are identical)"
    code, text, _ = run(capsys, "diff", a, b, "--json", "--heatmap", tmp_path / "j.png")
    assert code == 1 and (tmp_path / "j.png").exists() and "heatmap" not in text  # stdout stays JSON


def test_diff_heatmap_user_errors(capsys, folders, tmp_path):
    clean, _ = folders
    a = clean / "job000000-seed0.png"
    small = tmp_path / "small.png"
    edit_pixels(shutil.copy(a, small), lambda pixels: None)
    with PIL.Image.open(small) as image:
        info = PIL.PngImagePlugin.PngInfo()
        for key, value in image.text.items():
            info.add_text(key, value)
        image.resize((32, 32)).save(small, pnginfo=info)
    code, out, err = run(capsys, "diff", a, small, "--heatmap", tmp_path / "h.png")
    assert (code, out) == (2, "")
    assert err == (
        f"diffusers-repro: error: --heatmap: the images differ in size ({a} is 64x64, {small} is 32x32); a heatmap "
        "needs two images of one size\n"
    )
    code, _, err = run(capsys, "diff", a, a, "--heatmap", tmp_path / "h.jpg")
    assert code == 2
    assert err == (
        f"diffusers-repro: error: --heatmap '{tmp_path / 'h.jpg'}': expected a .png file (a lossy format would blur "
        "the differences)\n"
    )
    assert not (tmp_path / "h.png").exists() and not (tmp_path / "h.jpg").exists()


# --------------------------------------------------------------------------------------------------------------------
# The progress bar


class _FakeTerminal(io.StringIO):
    def isatty(self):
        return True


def test_verify_shows_a_progress_bar_with_eta_on_a_terminal(capsys, monkeypatch, folders):
    clean, _ = folders
    terminal = _FakeTerminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    code = main(["verify", str(clean)])
    out = capsys.readouterr().out
    assert code == 0
    bar = terminal.getvalue()
    assert "verify: 100%" in bar and "4/4" in bar
    assert re.search(r"\[\d\d:\d\d<\d\d:\d\d", bar)  # elapsed<remaining: the ETA
    lines = [line for line in out.splitlines() if not line.startswith("    ")]  # the indented detail lines
    assert [line.split(": ")[1] for line in lines[:4]] == ["bitwise"] * 4  # verdict lines intact, above the bar
    assert lines[-1] == "4 images: 4 bitwise, 0 close, 0 different; OK"
    assert sys.stdout is not None and "DummyTqdmFile" not in type(sys.stdout).__name__


def test_verify_progress_bar_is_quiet_off_a_terminal_and_for_a_few_images(capsys, monkeypatch, folders):
    clean, _ = folders
    code, _, err = run(capsys, "verify", clean)
    assert code == 0 and err == ""  # stderr is not a terminal here
    terminal = _FakeTerminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    assert main(["verify", str(clean / "job000000-seed0.png"), str(clean / "job000001-seed1.png")]) == 0
    assert "verify" not in terminal.getvalue()


# --------------------------------------------------------------------------------------------------------------------
# In a browser


def test_report_renders_in_headless_chromium(verified, tmp_path):
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.skip("headless Chromium is not installed (Debian: `make browser` or `apt-get install chromium`)")
    _, _, report = verified
    screenshot = tmp_path / "screenshot.png"
    profile = tmp_path / "profile"
    command = [
        chromium,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={profile}",
        f"--screenshot={screenshot}",
        "--window-size=1100,1400",
        report.as_uri(),
    ]
    completed = subprocess.run(command, capture_output=True, text=True, timeout=180)
    assert screenshot.exists(), completed.stderr[-2000:]
    with PIL.Image.open(screenshot) as image:
        assert image.size == (1100, 1400)
        pixels = np.asarray(image.convert("RGB"))
    assert pixels.std() > 20  # not a blank page
    colors = {tuple(color) for color in pixels[::4, ::4].reshape(-1, 3).tolist()}
    assert len(colors) > 200  # text, badges and the images themselves
    red = np.abs(pixels.astype(int) - (185, 28, 28)).max(axis=2) <= 8  # the "different" badge and border
    assert red.sum() > 100
    bright = np.abs(pixels.astype(int) - (252, 255, 164)).max(axis=2) <= 8  # the heatmap's changed patch
    assert bright.sum() > 100


def test_public_names():
    import diffusers_repro
    from diffusers_repro.verify import heatmap, report

    assert diffusers_repro.write_report is report.write_report
    assert diffusers_repro.difference_heatmap is heatmap.difference_heatmap
    assert diffusers_repro.write_heatmap is heatmap.write_heatmap
    for module in (heatmap, report):
        assert all(hasattr(module, name) for name in module.__all__)

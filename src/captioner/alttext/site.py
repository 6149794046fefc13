"""`captioner alt-text SITE_DIR`: suggest alt text for the <img> tags of a site's pages that have none, report
it (HTML for people, CSV for tools) and, with --write, add it to the pages in place.

    summary = alt_text(Path("site"), lambda paths: captioner.caption_many(paths), write=True, report=Path("report.html"))
    print(summary.line())

Each local image is captioned once however many tags show it. A doubtful caption is reported as "needs review"
and written only with include_unreviewed. An image already described (alt="...") is counted, not listed; one
marked decorative (alt="") is listed and left alone. Every problem (a remote, missing or outside image, an
unreadable file, a page that cannot be read or written) is one row of the report and one line through `warn`;
the other pages go on.
"""
from __future__ import annotations

import argparse
import base64
import csv
import hashlib
import html
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from captioner.alttext import html as markup
from captioner.alttext.html import ImageTag, Page, PageError
from captioner.argtypes import positive_int
from captioner.errors import CaptionerError
from captioner.io import atomic_write
from captioner.library.export import CONTROL_CHARACTERS, as_sentence

DEFAULT_REPORT = "alt-text-report.html"
CSV_COLUMNS = ("page", "image", "file", "suggested_text", "confidence", "status")
THUMBNAIL_PX = 96  # the report shows each image small: one cannot judge a description without the picture
SHOWN_URL_CHARACTERS = 120  # a data: URL can be megabytes; the HTML report and warnings show its start


class CaptionLike(Protocol):
    """What `caption` returns for an image it could read (captioner.inference.Caption is one)."""

    @property
    def text(self) -> str: ...

    @property
    def confidence(self) -> float | None: ...

    @property
    def doubtful(self) -> bool: ...


CaptionFunction = Callable[[list[Path]], Sequence[CaptionLike | Exception]]


@dataclass
class Suggestion:
    """One row of the report: an <img> without alt text (or marked decorative), or a page that failed."""

    page: str  # relative to SITE_DIR
    image: str  # the src (or chosen srcset URL) as written; "" for a page that failed as a whole
    file: str | None = None  # the local file, relative to SITE_DIR
    text: str | None = None  # the suggested alt text
    confidence: float | None = None
    status: str = "suggested"  # written, suggested, needs review, decorative, remote, outside the site, missing, failed: <why>
    doubtful: bool = False  # the caption's own doubt: "needs review" when not written, noted in the report when it was
    line: int | None = None  # the tag's line in the page
    note: str = ""  # why a remote, outside or missing image was not captioned ("file not found"), for the HTML report


@dataclass
class SiteSummary:
    """What one run did. The row counts come from `suggestions`; with_alt counts tags that were not listed."""

    pages: int = 0
    images: int = 0  # every <img> tag of the pages that could be read
    with_alt: int = 0  # described already: left alone, not listed
    missing_alt: int = 0  # no alt attribute at all
    unreadable: int = 0  # tags whose local file could not be captioned
    failed_pages: int = 0  # pages that could not be read, decoded or written
    suggestions: list[Suggestion] = field(default_factory=list)
    report: Path | None = None
    csv: Path | None = None

    def _count(self, status: str) -> int:
        return sum(row.status == status for row in self.suggestions)

    @property
    def written(self) -> int:
        return self._count("written")

    @property
    def suggested(self) -> int:
        return self._count("suggested")

    @property
    def needs_review(self) -> int:
        """Doubtful captions, written (with include_unreviewed) or not."""
        return sum(row.doubtful for row in self.suggestions)

    @property
    def decorative(self) -> int:
        return self._count("decorative")

    @property
    def remote(self) -> int:
        return self._count("remote")

    @property
    def outside(self) -> int:
        return self._count("outside the site")

    @property
    def missing(self) -> int:
        return self._count("missing")

    def line(self) -> str:
        """One line: '3 pages, 9 images: 4 with alt text, 1 decorative, 4 without: 2 written, 1 need review, 1 remote'."""
        head = (f"{_plural(self.pages, 'page')}, {_plural(self.images, 'image')}: {self.with_alt} with alt text, "
                f"{self.decorative} decorative, {self.missing_alt} without")
        parts = [(self.written, "written"), (self.suggested, "suggested"), (self.needs_review, "need review"),
                 (self.remote, "remote"), (self.outside, "outside the site"), (self.missing, "missing"),
                 (self.unreadable, "unreadable")]
        details = ", ".join(f"{count} {label}" for count, label in parts if count)
        failed = f"; {_plural(self.failed_pages, 'page')} failed" if self.failed_pages else ""
        return head + (f": {details}" if details else "") + failed


def _plural(count: int, word: str) -> str:
    """'1 page', '2 pages'."""
    return f"{count} {word}" if count == 1 else f"{count} {word}s"


def _shown(url: str) -> str:
    """A URL short enough to show: a data: URL's start."""
    return url if len(url) <= SHOWN_URL_CHARACTERS else url[:SHOWN_URL_CHARACTERS] + "…"


def _relative(path: Path, root: Path) -> str:
    """A path relative to the site, with forward slashes, as the report shows it."""
    try:
        return path.relative_to(root).as_posix()
    except ValueError:
        return str(path)


def csv_path_for(report: Path) -> Path:
    """The CSV written beside an HTML report: same folder and stem, .csv."""
    path = report.with_suffix(".csv")
    if path == report:
        raise CaptionerError(f"{report}: the report is the HTML file (its CSV goes beside it); give a name ending in .html")
    return path


# ---- the job ------------------------------------------------------------------------------------------------
def _scan_page(page: Page, name: str, site: Path, summary: SiteSummary, warn: Callable[[str], None],
               wanted: dict[Path, list[Suggestion]]) -> list[tuple[ImageTag, Suggestion]]:
    """List a page's images without alt text; the local ones join `wanted` (file -> rows) to be captioned."""
    for problem in page.problems:
        warn(f"{name}: {problem}")
    root = site.resolve()
    pending = []
    for image in page.images:
        summary.images += 1
        if image.has_alt and not image.decorative:
            summary.with_alt += 1
            continue
        url = markup.image_source(image)
        row = Suggestion(page=name, image=url or "", line=image.line)
        summary.suggestions.append(row)
        if image.decorative:
            row.status = "decorative"
            continue
        summary.missing_alt += 1
        located = markup.locate_image(url, page=page, site=site)
        if located.kind != "local" or located.path is None:
            row.status, row.note = located.kind, located.reason
            warn(f"{name}: line {image.line}: {_shown(url or '<img>')}: {located.reason}")
            continue
        row.file = _relative(located.path, root)
        wanted.setdefault(located.path, []).append(row)
        pending.append((image, row))
    return pending


def _fill(rows: list[Suggestion], file: Path, result: CaptionLike | Exception, *, include_unreviewed: bool,
          summary: SiteSummary, warn: Callable[[str], None]) -> None:
    """Give every row of one image its caption, or the reason it has none."""
    caption = None if isinstance(result, Exception) else result
    text = as_sentence(markup.clean_alt_text(caption.text or "")) if caption is not None else ""
    why = "the caption is empty" if caption is not None else str(result).removeprefix(f"{file}: ")
    for row in rows:
        if caption is None or not text:
            summary.unreadable += 1
            row.status = f"failed: {why}"
            warn(f"{row.page}: line {row.line}: {_shown(row.image)}: {why}")
            continue
        row.text, row.confidence, row.doubtful = text, caption.confidence, bool(caption.doubtful)
        row.status = "needs review" if row.doubtful and not include_unreviewed else "suggested"


def _write_page(path: Path, digest: bytes, pending: list[tuple[ImageTag, Suggestion]], summary: SiteSummary,
                warn: Callable[[str], None]) -> None:
    """Add the page's suggested alt texts to it; a failure marks its rows and the page, the page left as it was."""
    chosen = [(image, row) for image, row in pending if row.status == "suggested" and row.text]
    if not chosen:
        return
    try:
        # read again rather than held since the scan: memory stays one page, however large the site
        page = markup.read_page(path)
        if hashlib.sha256(page.data).digest() != digest:
            raise PageError("changed since it was read; run again")
        markup.write_alt_texts(page, {image.index: row.text or "" for image, row in chosen})
    except PageError as error:
        summary.failed_pages += 1
        warn(f"{chosen[0][1].page}: {error}")
        for _, row in chosen:
            row.status = f"failed: {error}"
        return
    for _, row in chosen:
        row.status = "written"


def alt_text(site_dir: Path, caption: CaptionFunction, *, write: bool = False, include_unreviewed: bool = False,
             report: Path | None = None, warn: Callable[[str], None] | None = None) -> SiteSummary:
    """Find the site's <img> tags without alt, caption their local files (each once, in one call to `caption`),
    report them (HTML at `report`, CSV beside it) and with `write` add the alt texts to the pages in place."""
    site = Path(site_dir)
    if not site.is_dir():
        raise CaptionerError(f"{site}: not a folder")
    warn = warn or (lambda line: None)
    csv_path = csv_path_for(Path(report)) if report is not None else None
    summary = SiteSummary()
    wanted: dict[Path, list[Suggestion]] = {}  # resolved file -> its rows, in the order first seen
    scanned: list[tuple[Path, bytes, list[tuple[ImageTag, Suggestion]]]] = []  # pages with images to caption
    # the report may sit inside the site: it is not one of its pages
    for path in markup.find_pages(site, skip=tuple(path for path in (report, csv_path) if path is not None)):
        summary.pages += 1
        name = _relative(path, site)
        try:
            page = markup.read_page(path)
        except PageError as error:
            summary.failed_pages += 1
            summary.suggestions.append(Suggestion(page=name, image="", status=f"failed: {error}"))
            warn(f"{name}: {error}")
            continue
        pending = _scan_page(page, name, site, summary, warn, wanted)
        if pending:
            scanned.append((path, hashlib.sha256(page.data).digest(), pending))

    files = list(wanted)
    results = list(caption(files)) if files else []  # no call at all when nothing needs a caption: no model to load
    if len(results) != len(files):
        raise ValueError(f"caption returned {len(results)} results for {len(files)} images")
    for file, result in zip(files, results, strict=True):
        _fill(wanted[file], file, result, include_unreviewed=include_unreviewed, summary=summary, warn=warn)

    if write:
        for path, digest, pending in scanned:
            _write_page(path, digest, pending, summary, warn)
    if report is not None and csv_path is not None:
        write_report(summary, site, Path(report), csv_path)
        summary.report, summary.csv = Path(report), csv_path
    return summary


# ---- the report ---------------------------------------------------------------------------------------------
STYLE = """
body { font-family: system-ui, sans-serif; margin: 0; color: #1a1a1a; background: #fafafa; line-height: 1.4; }
main { max-width: 90rem; margin: 0 auto; padding: 1rem; }
table { border-collapse: collapse; width: 100%; background: #fff; }
caption { text-align: left; font-weight: 600; padding: 0.5rem 0; }
th, td { border: 1px solid #bbb; padding: 0.3rem 0.5rem; text-align: left; vertical-align: top; overflow-wrap: anywhere; }
tr.review td { background: #fff4e5; }
.review strong { color: #7a3d00; }
.path { font-family: ui-monospace, monospace; font-size: 0.85rem; }
img { display: block; max-width: 6rem; height: auto; }
"""


def _text(value: object) -> str:
    """Any value as escaped HTML text (attribute-safe too), with control characters shown as \\xNN."""
    cleaned = CONTROL_CHARACTERS.sub(lambda match: f"\\x{ord(match.group()):02x}", str(value))
    return html.escape(cleaned, quote=True)


def _thumbnail(path: Path) -> str | None:
    """A small JPEG data URI of a file of the site, or None when it cannot be made (the row says the rest)."""
    from captioner.library.thumbnails import jpeg_thumbnail

    try:
        data, _, _ = jpeg_thumbnail(path, THUMBNAIL_PX)
    except Exception:  # Pillow fails in many ways; one picture must not stop the report
        return None
    return f"data:image/jpeg;base64,{base64.b64encode(data).decode('ascii')}"


def _status_cell(row: Suggestion) -> str:
    # in words, not only by colour: a reader who cannot see the shading must not take a doubtful caption on trust
    if row.status == "needs review":
        return "<strong>Needs review</strong>: a doubtful caption, not written; check it before using it"
    if row.doubtful and row.status == "written":
        return "Written; <strong>needs review</strong>: a doubtful caption, check it"
    if row.doubtful and row.status == "suggested":
        return "Suggested; <strong>needs review</strong>: a doubtful caption, check it"
    return _text(row.status[:1].upper() + row.status[1:] + (f": {row.note}" if row.note else ""))


def _row(row: Suggestion, site_root: Path, thumbnails: dict[str, str | None]) -> str:
    """One <tr>: page and line, the image URL (and its file), a preview, the text, the confidence, the status."""
    picture = ""
    if row.file is not None and row.text is not None:
        if row.file not in thumbnails:
            thumbnails[row.file] = _thumbnail(site_root / row.file)
        uri = thumbnails[row.file]
        # alt="": the suggested text sits in the next cell; a screen reader need not hear it twice
        picture = f'<img src="{uri}" alt="">' if uri else ""
    place = row.page + (f", line {row.line}" if row.line is not None else "")
    image = _text(_shown(row.image)) + (f'<br><span class="path">{_text(row.file)}</span>' if row.file and row.file != row.image else "")
    confidence = f"{round(row.confidence * 100)}%" if row.confidence is not None else ""
    return (f'<tr class="{"review" if row.doubtful else "row"}"><td class="path">{_text(place)}</td>'
            f'<th scope="row" class="path">{image}</th><td>{picture}</td><td>{_text(row.text or "")}</td>'
            f"<td>{confidence}</td><td>{_status_cell(row)}</td></tr>\n")


def report_html(summary: SiteSummary, site: Path) -> str:
    """The report as one self-contained page: the summary line and a table of every listed <img>."""
    title = f"Alt text for {site.resolve().name or site}"
    parts = ['<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n',
             '<meta name="viewport" content="width=device-width, initial-scale=1">\n',
             f"<title>{_text(title)}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n<main>\n",
             f"<h1>{_text(title)}</h1>\n<p class=\"summary\">{_text(summary.line())}.</p>\n"]
    if summary.suggestions:
        parts.append("<table>\n<caption>Images without alt text, what is suggested for each, and what was done</caption>\n"
                     "<thead><tr><th scope=\"col\">Page</th><th scope=\"col\">Image</th><th scope=\"col\">Preview</th>"
                     "<th scope=\"col\">Suggested text</th><th scope=\"col\">Confidence</th><th scope=\"col\">Status</th></tr></thead>\n"
                     "<tbody>\n")
        thumbnails: dict[str, str | None] = {}
        root = site.resolve()
        parts += [_row(row, root, thumbnails) for row in summary.suggestions]
        parts.append("</tbody>\n</table>\n")
    else:
        parts.append("<p>Every image has alt text.</p>\n")
    parts.append("</main>\n</body>\n</html>\n")
    return "".join(parts)


def _csv_rows(summary: SiteSummary) -> list[list[str]]:
    """The report's rows as CSV cells (CSV_COLUMNS): None as an empty cell, the confidence to 4 places."""
    return [[row.page, row.image, row.file or "", row.text or "", "" if row.confidence is None else str(round(row.confidence, 4)),
             row.status] for row in summary.suggestions]


def write_report(summary: SiteSummary, site: Path, report: Path, csv_file: Path) -> None:
    """Write the HTML report and its CSV, each atomically (a temp file beside it, then a rename)."""
    page = report_html(summary, site)

    def write_csv(temp: str) -> None:
        # backslashreplace: a file name that is not UTF-8 shows as \\udcxx rather than stopping the report
        with open(temp, "w", encoding="utf-8", errors="backslashreplace", newline="") as stream:
            writer = csv.writer(stream, lineterminator="\n")
            writer.writerow(CSV_COLUMNS)
            writer.writerows(_csv_rows(summary))

    try:
        atomic_write(report, lambda temp: Path(temp).write_text(page, encoding="utf-8", errors="backslashreplace"))
        atomic_write(csv_file, write_csv)
    except OSError as error:
        raise CaptionerError(f"{error.filename or report}: cannot write the report: {error.strerror or error}") from None


# ---- the command --------------------------------------------------------------------------------------------
def command_alt_text(args: argparse.Namespace) -> int:
    """`captioner alt-text`: run alt_text with the run's Captioner; 1 when some page failed, else 0."""
    site = Path(args.site)
    if not site.is_dir():
        raise CaptionerError(f"{site}: not a folder")
    loaded = None

    def caption(paths: list[Path]) -> Sequence[CaptionLike | Exception]:
        nonlocal loaded
        if loaded is None:  # the run is loaded only when some image needs a caption: a described site needs no model
            from captioner.inference import Captioner

            loaded = Captioner.load(args.run)
        return loaded.caption_many(paths, batch_size=args.batch_size)

    report = Path(args.report)
    summary = alt_text(site, caption, write=args.write, include_unreviewed=args.include_unreviewed, report=report,
                       warn=lambda line: print(f"warning: {line}", file=sys.stderr))
    print(f"{site}: {summary.line()}")
    print(f"report: {summary.report} and {summary.csv}")
    return 1 if summary.failed_pages else 0


def add_command(commands: argparse._SubParsersAction) -> None:
    """Register `captioner alt-text SITE_DIR [--run] [--report] [--write] [--include-unreviewed] [--batch-size]`."""
    parser = commands.add_parser("alt-text", help="suggest alt text for the <img> tags of a site's HTML pages that have none; "
                                                  "--write adds it to the pages")
    parser.add_argument("site", metavar="SITE_DIR", help="the folder of the site's HTML pages and images")
    parser.add_argument("--run", default="runs/default", help="the trained run that writes the captions (default: %(default)s)")
    parser.add_argument("--report", default=DEFAULT_REPORT,
                        help="the HTML report to write, with a CSV of the same name beside it (default: %(default)s)")
    parser.add_argument("--write", action="store_true",
                        help="add the alt attributes to the pages in place (each original kept as PAGE.bak)")
    parser.add_argument("--include-unreviewed", action="store_true",
                        help="with --write, write doubtful captions too (marked 'needs review' in the report)")
    parser.add_argument("--batch-size", type=positive_int, default=16)
    parser.set_defaults(handler=command_alt_text)

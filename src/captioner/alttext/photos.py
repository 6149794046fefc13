"""`captioner write-metadata`: a library's captions into its photos' metadata, where photo managers and screen
readers find them.

    captioner write-metadata PHOTOS_DIR [--library FILE] [--sidecar | --embed] [--dry-run] [--overwrite] [--include-unreviewed]

The default writes an XMP sidecar beside each photo and leaves the photo itself alone; --embed writes into the
file (alttext.metadata says which fields, per format). A caption that needs review (doubtful, and no person
has accepted or edited it) is not written unless --include-unreviewed; a description a person wrote in the file
stays unless --overwrite. A photo that changed since it was indexed is skipped: its caption may no longer fit.
"""
from __future__ import annotations

import argparse
import os
import sys
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from captioner.library.store import Library, LibraryError, Photo

NOT_WRITTEN = "needs review"  # the action of a doubtful caption nobody reviewed


@dataclass
class MetadataSummary:
    actions: Counter = field(default_factory=Counter)  # action -> photos: written, unchanged, would write, kept, ...

    @property
    def failed(self) -> int:
        return self.actions["failed"]

    def line(self) -> str:
        order = ["written", "would write", "unchanged", "kept", NOT_WRITTEN, "changed since indexed", "no caption",
                 "skipped", "failed"]
        return ", ".join(f"{self.actions[action]} {action}" for action in order if self.actions[action]) or "no photos"


def description_of(photo: Photo):
    """What goes into the photo: the model's caption as a sentence (as the web page and alt-text write it), a
    person's words as they wrote them."""
    from captioner import __version__
    from captioner.alttext.metadata import Description
    from captioner.library.export import as_sentence

    text = photo.caption or ""
    return Description(text=text if photo.review == "edited" else as_sentence(text), tool=f"captioner {__version__}",
                       model=photo.run or "", review=photo.review, confidence=photo.confidence)


def _still_as_indexed(path: Path, photo: Photo) -> bool:
    try:
        info = path.stat()
    except OSError:
        return False
    return (info.st_size, info.st_mtime_ns) == (photo.size, photo.mtime_ns)


def write_metadata(library: Library, *, embed: bool = False, dry_run: bool = False, overwrite: bool = False,
                   include_unreviewed: bool = False, say: Callable[[str], None] | None = None) -> MetadataSummary:
    """Write every captioned photo's caption into its sidecar (or, with embed, into the file); `say` gets one line
    per photo that is written, would be, or is held back, and one per failure."""
    from captioner.alttext import metadata
    from captioner.library.reading import file_sha256

    say = say or print
    summary = MetadataSummary()
    for key, photo in library.items():
        path = library.file_path(key)
        if photo.caption is None:
            summary.actions["no caption"] += 1  # failed to caption: its error is in the library
            continue
        if photo.needs_review and not include_unreviewed:
            summary.actions[NOT_WRITTEN] += 1
            say(f"{path}: needs review (confidence {photo.confidence:.2f}), not written: \"{photo.caption}\"; accept or edit "
                "it in the review view (captioner serve RUN --library FILE), or pass --include-unreviewed")
            continue
        if not _still_as_indexed(path, photo):
            summary.actions["changed since indexed"] += 1
            say(f"{path}: changed or gone since it was indexed; run `captioner index` first")
            continue
        write = metadata.embed if embed else metadata.write_sidecar
        outcome = write(path, description_of(photo), overwrite=overwrite, dry_run=dry_run)
        summary.actions[outcome.action] += 1
        if outcome.action != "unchanged":
            say(outcome.message)
        if embed and outcome.action == "written":  # the file's bytes changed on purpose: not a photo to recaption
            info = path.stat()
            library.update_file(key, size=info.st_size, mtime_ns=info.st_mtime_ns, sha256=file_sha256(os.fsencode(path)))
    return summary


def command_write_metadata(args: argparse.Namespace) -> int:
    from captioner.library.commands import DEFAULT_LIBRARY

    root = Path(args.photos)
    path = Path(args.library) if args.library else root / DEFAULT_LIBRARY
    with Library.open(path) as library:
        if library.root != root.resolve():
            raise LibraryError(f"{path}: indexes {library.root}, not {root.resolve()}")
        summary = write_metadata(library, embed=args.embed, dry_run=args.dry_run, overwrite=args.overwrite,
                                 include_unreviewed=args.include_unreviewed)
    print(f"{root}: {summary.line()}{' (dry run: nothing written)' if args.dry_run else ''}", file=sys.stderr)
    return 1 if summary.failed else 0


def add_command(commands: argparse._SubParsersAction) -> None:
    from captioner.library.commands import DEFAULT_LIBRARY

    parser = commands.add_parser("write-metadata", help="write a library's captions into its photos' metadata (XMP sidecars, "
                                                        "or embedded)")
    parser.add_argument("photos", metavar="PHOTOS_DIR")
    parser.add_argument("--library", help=f"the library file (default: PHOTOS_DIR/{DEFAULT_LIBRARY})")
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--sidecar", dest="embed", action="store_false", help="an XMP file beside each photo (the default)")
    where.add_argument("--embed", dest="embed", action="store_true",
                       help="into the photo file itself: XMP, EXIF ImageDescription, IPTC Caption-Abstract")
    parser.add_argument("--dry-run", action="store_true", help="list what would change, write nothing")
    parser.add_argument("--overwrite", action="store_true", help="replace a description a person wrote")
    parser.add_argument("--include-unreviewed", action="store_true", help="also write doubtful captions no person has reviewed")
    parser.set_defaults(handler=command_write_metadata, embed=False)

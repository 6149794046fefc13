"""The library's commands: `captioner index`, `captioner search`, `captioner export`."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from captioner.argtypes import non_negative_int, positive_int
from captioner.library.store import LIBRARY_DIR, LIBRARY_FILE, Library, LibraryError

DEFAULT_LIBRARY = Path(LIBRARY_DIR) / LIBRARY_FILE


def command_index(args: argparse.Namespace) -> int:
    from captioner.library.indexer import index

    root = Path(args.photos)
    if not root.is_dir():
        raise LibraryError(f"{root}: not a folder")
    path = Path(args.library) if args.library else root / DEFAULT_LIBRARY
    with Library.open(path, create=True, root=root) as library:
        if library.root != root.resolve():
            raise LibraryError(f"{path}: indexes {library.root}, not {root.resolve()}")
        # the run is loaded only when there is something to caption: a rerun with nothing new stays fast
        summary = index(library, args.run, batch_size=args.batch_size, recaption=args.recaption, workers=args.workers,
                        progress=not args.quiet)
    print(f"{path}: {summary.line()}")
    return 1 if summary.failed else 0


def command_search(args: argparse.Namespace) -> int:
    from captioner.library.search import search

    path = Path(args.library) if args.library else DEFAULT_LIBRARY
    with Library.open(path) as library:
        hits = search(library, args.text, limit=args.limit)
        root = library.root
    if args.json:
        print(json.dumps([{**hit.photo.record(), "file": str(root / hit.photo.path), "rank": round(hit.rank, 4)} for hit in hits],
                         ensure_ascii=False, indent=2))
    else:
        for hit in hits:
            photo = hit.photo
            marks = [f"confidence {photo.confidence:.2f}"] if photo.confidence is not None and not photo.reviewed else []
            marks += ["needs review"] if photo.needs_review else []
            marks += [{"approved": "approved by a person", "edited": "written by a person"}[photo.review]] if photo.reviewed else []
            print(f"{root / photo.path}\t{photo.caption}" + "".join(f"\t[{mark}]" for mark in marks))
    if not hits:
        print(f"no photo matches {args.text!r}", file=sys.stderr)
    return 0


def command_export(args: argparse.Namespace) -> int:
    from captioner.library import export

    path = Path(args.library) if args.library else DEFAULT_LIBRARY
    out = Path(args.out) if args.out else Path(f"library.{args.format}")
    writers = {"csv": export.export_csv, "jsonl": export.export_jsonl, "html": export.export_html}
    with Library.open(path) as library:
        count = writers[args.format](library, out)
    print(f"{out}: {count} photos")
    return 0


def add_commands(commands: argparse._SubParsersAction) -> None:
    from captioner.library.reading import DEFAULT_WORKERS

    library_help = f"the library file (default: PHOTOS_DIR/{DEFAULT_LIBRARY})"
    index = commands.add_parser("index", help="caption every new or changed photo under a folder into its library (resumable)")
    index.add_argument("photos", metavar="PHOTOS_DIR")
    index.add_argument("--run", default="runs/default", help="the trained run that writes the captions (default: %(default)s)")
    index.add_argument("--library", help=library_help)
    index.add_argument("--batch-size", type=positive_int, default=16)
    index.add_argument("--workers", type=non_negative_int, default=DEFAULT_WORKERS,
                       help="processes that read and decode photos beside the model; 0 reads in a thread (default: %(default)s)")
    index.add_argument("--recaption", action="store_true", help="caption every photo again (another run, or new settings)")
    index.add_argument("--quiet", action="store_true", help="no progress bar")
    index.set_defaults(handler=command_index)

    search = commands.add_parser("search", help="find photos in a library by words")
    search.add_argument("text")
    search.add_argument("--library", help=f"the library file (default: ./{DEFAULT_LIBRARY})")
    search.add_argument("--limit", type=positive_int, default=20)
    search.add_argument("--json", action="store_true")
    search.set_defaults(handler=command_search)

    export = commands.add_parser("export", help="write a library out as CSV, JSON lines or an HTML gallery")
    export.add_argument("--format", choices=("csv", "jsonl", "html"), required=True)
    export.add_argument("--library", help=f"the library file (default: ./{DEFAULT_LIBRARY})")
    export.add_argument("--out", help="the file to write (default: library.FORMAT)")
    export.set_defaults(handler=command_export)

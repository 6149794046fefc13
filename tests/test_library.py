"""The photo library: index a generated tree, keep it current, search it; every bad input on the way."""
from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from captioner.cli import main
from captioner.library.indexer import IndexLock, index
from captioner.library.search import fts_query, search
from captioner.library.store import SCHEMA_VERSION, Library, LibraryError, Photo

from conftest import COLOURS, SHAPES, draw_shape, noisy_jpeg_bytes, png_header


def draw_tree(root: Path, count: int = 6) -> list[Path]:
    """`count` shape photos in nested folders, names with spaces and Unicode among them."""
    folders = [root, root / "2024" / "summer", root / "Ferien ä"]
    paths = []
    for number in range(count):
        colour, shape = list(COLOURS)[number % 3], SHAPES[number % 2]
        path = folders[number % 3] / f"{colour} {shape} {number}.jpg"
        path.parent.mkdir(parents=True, exist_ok=True)
        draw_shape(colour, shape, number).save(path, quality=95)
        paths.append(path)
    return paths


@pytest.fixture
def tree(tmp_path) -> Path:
    root = tmp_path / "photos"
    draw_tree(root)
    return root


def open_library(root: Path) -> Library:
    return Library.open(root / ".captioner" / "library.sqlite", create=True, root=root)


def rows(root: Path) -> dict[str, Photo]:
    with open_library(root) as library:
        return {photo.path: photo for photo in library.photos()}


def test_index_captions_every_photo_once_and_search_finds_them_by_stem(tree, tiny_captioner):
    with open_library(tree) as library:
        first = index(library, tiny_captioner, batch_size=4, progress=False)
        assert (first.captioned, first.unchanged, first.failed) == (6, 0, 0)
        photos = {photo.path: photo for photo in library.photos()}
        assert "Ferien ä/blue square 2.jpg" in photos and "2024/summer/green circle 1.jpg" in photos
        photo = photos["red square 0.jpg"]
        assert photo.caption and photo.width == photo.height == 96 and len(photo.sha256) == 64
        assert photo.run == str(tiny_captioner.run_dir) and photo.captioned_at.endswith("+00:00") and photo.error is None
        # the tiny run's captions name colours and shapes: "circles" finds "circle" (stemming), best match first
        found = [hit.photo.path for hit in search(library, "red circles")]
        assert found and all("circle" in photos[path].caption or "red" in photos[path].caption for path in found)
        assert "red" in photos[found[0]].caption and "circle" in photos[found[0]].caption
        again = index(library, tiny_captioner, batch_size=4, progress=False)
        assert (again.captioned, again.unchanged) == (0, 6)
        assert {p.path: p.captioned_at for p in library.photos()} == {p.path: p.captioned_at for p in photos.values()}


def test_moved_changed_and_deleted_photos(tree, tiny_captioner):
    with open_library(tree) as library:
        index(library, tiny_captioner, progress=False)
        before = {photo.path: photo for photo in library.photos()}
        (tree / "red square 0.jpg").rename(tree / "2024" / "renamed.jpg")  # moved: keeps its caption
        (tree / "Ferien ä" / "blue square 2.jpg").unlink()  # deleted: leaves the index
        changed = tree / "2024" / "summer" / "green circle 1.jpg"
        draw_shape("red", "square", 3).save(changed, quality=95)  # changed content: captioned again
        os.utime(changed, ns=(time.time_ns(), time.time_ns() + 10**9))
        summary = index(library, tiny_captioner, progress=False)
        assert (summary.moved, summary.removed, summary.captioned, summary.unchanged) == (1, 1, 1, 3)
        after = {photo.path: photo for photo in library.photos()}
    assert "red square 0.jpg" not in after and "Ferien ä/blue square 2.jpg" not in after
    moved = after["2024/renamed.jpg"]
    assert (moved.caption, moved.captioned_at, moved.sha256) == (before["red square 0.jpg"].caption,
                                                                 before["red square 0.jpg"].captioned_at, before["red square 0.jpg"].sha256)
    assert after["2024/summer/green circle 1.jpg"].sha256 != before["2024/summer/green circle 1.jpg"].sha256


def test_bad_files_are_recorded_with_their_error_and_the_job_goes_on(tree, tiny_captioner):
    jpeg = noisy_jpeg_bytes()
    bad = {"empty.jpg": b"", "notes.jpg": b"not a photo at all\n", "truncated.jpg": jpeg[: len(jpeg) // 2],
           "huge.png": png_header(30000, 30000)}
    for name, data in bad.items():
        (tree / name).write_bytes(data)
    odd = os.fsencode(tree) + b"/caf\xe9 latin-1.jpg"  # a name that is not UTF-8
    draw_shape("red", "circle", 1).save(os.fsdecode(odd), format="JPEG")
    (tree / "loop").symlink_to(tree, target_is_directory=True)  # a symlink loop is never followed
    (tree / "link.jpg").symlink_to(tree / "red square 0.jpg")
    warnings: list[str] = []
    with open_library(tree) as library:
        summary = index(library, tiny_captioner, progress=False, warn=warnings.append)
        photos = {photo.path: photo for photo in library.photos()}
    assert (summary.captioned, summary.failed) == (7, 4)
    assert len(warnings) == 4 and all("\n" not in warning for warning in warnings)
    for name in bad:
        assert photos[name].caption is None and photos[name].error.startswith(name), photos[name].error
    assert photos["caf\\xe9 latin-1.jpg"].caption  # shown with the byte escaped, captioned all the same
    assert not any(path.startswith("loop/") or path == "link.jpg" for path in photos)
    with open_library(tree) as library:  # failed files are not retried until they change
        assert index(library, tiny_captioner, progress=False, warn=warnings.append).failed == 0


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads every folder whatever its mode")
def test_an_unreadable_folder_is_reported_and_skipped(tree, tiny_captioner):
    locked = tree / "private"
    locked.mkdir()
    draw_shape("red", "circle", 0).save(locked / "secret.jpg")
    locked.chmod(0)
    try:
        with open_library(tree) as library:
            summary = index(library, tiny_captioner, progress=False, warn=lambda message: None)
        assert summary.captioned == 6 and len(summary.skipped_folders) == 1
    finally:
        locked.chmod(0o755)


def test_a_file_that_is_not_a_library_is_refused_and_left_untouched(tmp_path):
    other = tmp_path / "other.sqlite"
    connection = sqlite3.connect(other)
    connection.execute("CREATE TABLE notes (text)")
    connection.commit()
    connection.close()
    junk = tmp_path / "junk.sqlite"
    junk.write_bytes(b"my thesis, chapter 1\n" * 100)
    for path in (other, junk):
        before = path.read_bytes()
        with pytest.raises(LibraryError, match="not a captioner library"):
            Library.open(path, create=True, root=tmp_path)
        assert path.read_bytes() == before
    with pytest.raises(LibraryError, match="no library here"):
        Library.open(tmp_path / "missing.sqlite")
    with pytest.raises(LibraryError, match="is a folder"):
        Library.open(tmp_path, create=True, root=tmp_path)
    empty = tmp_path / "empty.sqlite"  # what a kill before the schema was written leaves: made into a library
    empty.write_bytes(b"")
    with Library.open(empty, create=True, root=tmp_path) as library:
        assert library.count() == 0


def test_a_library_from_a_newer_captioner_is_refused(tmp_path):
    path = tmp_path / "lib.sqlite"
    Library.open(path, create=True, root=tmp_path).close()
    connection = sqlite3.connect(path)
    connection.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    connection.close()
    with pytest.raises(LibraryError, match="newer captioner"):
        Library.open(path)


def test_a_second_index_on_the_same_library_gets_a_clear_error(tree, tiny_captioner):
    with open_library(tree) as library, IndexLock(library.path):
        with pytest.raises(LibraryError, match="another `captioner index`"):
            index(library, tiny_captioner, progress=False)


def test_a_library_captioned_by_another_run_asks_for_recaption(tree, tiny_captioner):
    with open_library(tree) as library:
        index(library, tiny_captioner, progress=False)
        library.set_meta("model", "/elsewhere/runs/old:1:2")
        with pytest.raises(LibraryError, match="--recaption"):
            index(library, tiny_captioner, progress=False)
        with pytest.raises(LibraryError, match="--recaption"):  # as the command line passes it: the run's folder
            index(library, str(tiny_captioner.run_dir), progress=False)
        assert index(library, tiny_captioner, progress=False, recaption=True).captioned == 6


def test_a_full_disk_rolls_the_batch_back_and_leaves_the_library_consistent(tree, tiny_captioner):
    with open_library(tree) as library:
        index(library, tiny_captioner, progress=False)
        count = library.count()
        pages = library.connection.execute("PRAGMA page_count").fetchone()[0]
        library.connection.execute(f"PRAGMA max_page_count = {pages}")  # no room for one more page
        big = [(f"new{number}.jpg".encode(), Photo(path=f"new{number}.jpg", size=1, mtime_ns=1, caption="x" * 5000))
               for number in range(50)]
        with pytest.raises(sqlite3.OperationalError, match="full"):
            library.write(big)
        assert library.count() == count
        assert library.connection.execute("PRAGMA integrity_check").fetchone()[0] == "ok"


@pytest.mark.parametrize("query", ['"', "*", "NEAR(dog cat)", "dog AND", "((", ")", "", "   ", "-", "^red", "col:red",
                                   "'; DROP TABLE photos; --", "red OR", "\x00", "😀"])
def test_any_query_text_is_plain_words_never_an_error(tree, tiny_captioner, query):
    with open_library(tree) as library:
        index(library, tiny_captioner, progress=False)
        search(library, query)  # no exception
        assert library.count() == 6
    assert fts_query("") is None and fts_query('red "circle"') == '"red" OR "circle"'


def descendants(pid: int) -> list[int]:
    """The process's children, theirs, and so on (Linux /proc)."""
    found, queue = [], [pid]
    while queue:
        for task in Path(f"/proc/{queue.pop()}/task").glob("*"):
            try:
                children = [int(child) for child in (task / "children").read_text().split()]
            except OSError:
                continue
            found += children
            queue += children
    return found


def test_killed_with_sigkill_and_rerun_it_captions_only_what_is_missing(tmp_path, tiny_run):
    root = tmp_path / "many"
    draw_tree(root, count=120)
    command = [sys.executable, "-c", "import sys; from captioner.cli import main; sys.exit(main())", "index", str(root),
               "--run", str(tiny_run), "--batch-size", "2", "--quiet"]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    database = root / ".captioner" / "library.sqlite"
    written = 0
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and process.poll() is None:
        if database.exists():
            try:
                with sqlite3.connect(f"file:{database}?mode=ro", uri=True, timeout=1) as reader:
                    written = reader.execute("SELECT count(*) FROM photos").fetchone()[0]
            except sqlite3.DatabaseError:
                written = 0
            if written >= 4:
                break
        time.sleep(0.02)
    helpers = descendants(process.pid)  # its photo-reading workers and their fork server
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert 4 <= written < 120, "the index finished (or never started) before it could be killed"
    assert helpers, "the index ran no worker processes"
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and any(Path(f"/proc/{pid}").exists() for pid in helpers):
        time.sleep(0.1)
    assert not [pid for pid in helpers if Path(f"/proc/{pid}").exists()], "worker processes outlived the killed index"
    with open_library(root) as library:
        assert library.connection.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        kept = library.count()
        assert kept >= written and kept % 2 == 0  # whole batches only
        from captioner.inference import Captioner

        summary = index(library, Captioner.load(tiny_run), progress=False)
        assert (summary.unchanged, summary.captioned) == (kept, 120 - kept)
        assert library.count() == 120


def test_the_commands_index_search_and_export(tree, tiny_run, tmp_path, capsys):
    library = tree / ".captioner" / "library.sqlite"
    assert main(["index", str(tree), "--run", str(tiny_run), "--quiet"]) == 0
    assert "6 captioned" in capsys.readouterr().out
    assert main(["search", "red", "--library", str(library), "--json"]) == 0
    hits = json.loads(capsys.readouterr().out)
    assert hits and all(Path(hit["file"]).is_file() for hit in hits) and "red" in hits[0]["caption"]
    assert main(["export", "--format", "jsonl", "--library", str(library), "--out", str(tmp_path / "out.jsonl")]) == 0
    assert len((tmp_path / "out.jsonl").read_text().splitlines()) == 6
    assert main(["search", "red", "--library", str(tmp_path / "none.sqlite")]) == 2
    assert "error:" in capsys.readouterr().err
    assert main(["index", str(tmp_path / "not-there"), "--run", str(tiny_run)]) == 2


def test_the_python_api(tree, tiny_captioner):
    from captioner.library import Library as Exported

    with Exported.open(tree / "lib.sqlite", create=True, root=tree) as library:
        assert library.index(tiny_captioner, progress=False).captioned == 6
        assert library.search("circle") and library.search("") == []


def test_a_photo_deleted_or_replaced_while_the_job_runs(tree, tiny_captioner, monkeypatch):
    import captioner.library.reading as reading  # read in a thread (workers=0), so the patched loader is the one used

    original = reading.load
    vanishing, replaced = tree / "red square 0.jpg", tree / "2024" / "summer" / "green circle 1.jpg"

    def load_after_a_change(found, input_size):
        if found.path == os.fsencode(vanishing):
            vanishing.unlink()  # deleted after the scan listed it
        if found.path == os.fsencode(replaced):
            replaced.write_bytes(b"replaced by a text file")  # replaced after the scan listed it
        return original(found, input_size)

    monkeypatch.setattr(reading, "load", load_after_a_change)
    warnings: list[str] = []
    with open_library(tree) as library:
        summary = index(library, tiny_captioner, progress=False, warn=warnings.append, workers=0)
        assert (summary.captioned, summary.failed) == (4, 2)
        assert any("cannot read" in warning for warning in warnings) and any("not an image" in warning for warning in warnings)
        monkeypatch.setattr(reading, "load", original)
        again = index(library, tiny_captioner, progress=False, warn=warnings.append)
        # the deleted photo leaves; the replaced one changed after its scan, so it is read once more (and fails again)
        assert (again.removed, again.captioned, again.failed) == (1, 0, 1)
        third = index(library, tiny_captioner, progress=False, warn=warnings.append)
        assert (third.unchanged, third.failed, third.removed) == (5, 0, 0) and library.count() == 5


def test_a_library_of_the_first_schema_opens_migrated_and_keeps_its_rows(tmp_path):
    from captioner.library.store import APPLICATION_ID, MIGRATIONS, _statements

    path = tmp_path / "old.sqlite"
    connection = sqlite3.connect(path, isolation_level=None)
    for statement in _statements(MIGRATIONS[0]):  # a library as the first release wrote it
        connection.execute(statement)
    connection.execute(f"PRAGMA application_id = {APPLICATION_ID}")
    connection.execute("PRAGMA user_version = 1")
    connection.execute("INSERT INTO meta VALUES ('root', ?)", (str(tmp_path),))
    connection.execute("INSERT INTO photos (path_key, path, size, mtime_ns, caption) VALUES (?, 'a.jpg', 1, 1, 'a dog runs')",
                       (b"a.jpg",))
    connection.execute("INSERT INTO photos_fts (rowid, caption, alternatives, recognised) VALUES (1, 'a dog runs', '', '')")
    connection.close()
    with Library.open(path) as library:
        photo = library.get(b"a.jpg")
        assert (photo.caption, photo.machine_caption, photo.review, photo.reviewed) == ("a dog runs", "a dog runs", "machine", False)
        assert [hit.photo.path for hit in library.search("dogs running")] == ["a.jpg"]
        assert library.connection.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION


def test_a_reviewed_caption_is_marked_searchable_and_survives_recaption(tree, tiny_captioner):
    with open_library(tree) as library:
        index(library, tiny_captioner, progress=False)
        machine = library.get(b"red square 0.jpg")
        accepted = library.set_review(b"red square 0.jpg", machine.caption, edited=False)
        assert (accepted.review, accepted.caption, accepted.reviewed_at is not None) == ("approved", machine.caption, True)
        written = library.set_review(b"2024/summer/green circle 1.jpg", "  a  lighthouse on a cliff ", edited=True)
        assert (written.review, written.caption, written.machine_caption) == ("edited", "a lighthouse on a cliff",
                                                                             library.get(b"2024/summer/green circle 1.jpg").machine_caption)
        assert [hit.photo.path for hit in library.search("lighthouses")] == ["2024/summer/green circle 1.jpg"]
        with pytest.raises(LibraryError, match="empty"):
            library.set_review(b"red square 0.jpg", "   ", edited=True)
        with pytest.raises(LibraryError, match="not in the library"):
            library.set_review(b"nowhere.jpg", "a cat", edited=True)
        summary = index(library, tiny_captioner, progress=False, recaption=True)
        assert summary.captioned == 6
        after = library.get(b"2024/summer/green circle 1.jpg")
        assert (after.caption, after.review, after.reviewed_at) == ("a lighthouse on a cliff", "edited", written.reviewed_at)
        assert after.machine_caption and after.machine_caption != after.caption and not after.needs_review
        assert library.get(b"red square 0.jpg").review == "approved"
        assert library.get("Ferien ä/blue square 2.jpg".encode()).review == "machine"


def test_worker_processes_read_what_a_thread_reads(tree, tiny_captioner):
    (tree / "broken.jpg").write_bytes(noisy_jpeg_bytes()[:300])
    (tree / "text.png").write_bytes(b"not a picture")
    results = {}
    for workers in (0, 2):
        with Library.open(tree / f"lib{workers}.sqlite", create=True, root=tree) as library:
            summary = index(library, tiny_captioner, progress=False, workers=workers, batch_size=3, warn=lambda message: None)
            assert (summary.captioned, summary.failed) == (6, 2)
            results[workers] = {photo.path: (photo.caption, photo.sha256, photo.width, photo.error) for photo in library.photos()}
    assert results[0] == results[2]


def crash_on_purpose(found, input_size):
    """A loader for the worker test: the photo named 'crash' kills its worker process, as a decoder crash would."""
    from captioner.library.reading import load

    if b"crash" in found.key:
        os._exit(70)
    return load(found, input_size)


def test_a_worker_process_that_dies_costs_only_the_photo_that_killed_it(tree):
    from captioner.library.reading import BatchReader, Found

    (tree / "crash.jpg").write_bytes((tree / "red square 0.jpg").read_bytes())
    found = [Found(path.name.encode(), os.fsencode(path), path.stat().st_size, 0) for path in sorted(tree.glob("*.jpg"))]
    batches = [found[:1], found[1:], found[:1]]  # the crash photo in the middle batch
    warnings: list[str] = []
    read = list(BatchReader(batches, 32, workers=2, warn=warnings.append, load_one=crash_on_purpose))
    assert [len(batch) for batch in read] == [1, 2, 1]
    errors = {item.found.key: item.error for batch in read for item in batch}
    assert "killed the worker process" in errors[b"crash.jpg"] and errors[b"red square 0.jpg"] is None
    assert all(item.pixels.shape == (32, 32, 3) for batch in read for item in batch if item.error is None)
    # batches in flight when it died are read again too (a dead worker breaks its whole pool): nothing is lost
    assert warnings and all("worker process died" in warning for warning in warnings)


def test_workers_that_cannot_start_stop_the_job_with_a_clear_error(tree, tmp_path):
    # a script without the `if __name__ == "__main__"` guard: the fork server's workers import it again and die
    script = tmp_path / "no_guard.py"
    script.write_text(
        "import os, sys\n"
        "from captioner.library.reading import BatchReader, Found\n"
        "path = os.fsencode(sys.argv[1])\n"
        "batches = [[Found(b'a.jpg', path, 1, 0)], [Found(b'b.jpg', path, 1, 0)]]\n"
        "list(BatchReader(batches, 32, workers=1, warn=lambda line: None))\n")
    result = subprocess.run([sys.executable, str(script), str(tree / "red square 0.jpg")], capture_output=True, text=True, timeout=120)
    last = result.stderr.strip().splitlines()[-1]
    assert result.returncode == 1 and last == ("captioner.library.store.LibraryError: photo-reading worker processes keep dying "
                                               "here; run again with --workers 0 to read photos in this process")

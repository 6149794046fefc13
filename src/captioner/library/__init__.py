"""The photo library: caption a folder tree once, keep it current, find photos by words.

    from captioner import Captioner
    from captioner.library import Library

    with Library.open("photos/.captioner/library.sqlite", create=True, root="photos") as library:
        print(library.index(Captioner.load("runs/default")).line())
        for hit in library.search("dog running on a beach"):
            print(hit.photo.path, hit.photo.caption)
"""
from captioner.library.store import Library, LibraryError, Photo

__all__ = ["Library", "LibraryError", "Photo"]

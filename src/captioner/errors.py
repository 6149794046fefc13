"""One exception type for every user-facing failure, so the CLI can print it on one line."""


class CaptionerError(Exception):
    """A problem with the user's input (a path, a file, a config key); the message says what to do."""


class ImageError(CaptionerError):
    """An image that cannot be read: missing, empty, corrupt, not an image, or too large."""

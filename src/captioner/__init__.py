"""captioner: image captions from a frozen CNN encoder and a soft-attention LSTM decoder.

    from captioner import Captioner
    captions = Captioner.load("runs/default").caption(["photo.jpg"])
"""
__version__ = "0.1.0"
__all__ = ["Caption", "Captioner", "__version__"]


def __getattr__(name: str):
    # imported lazily so `import captioner` (and the CLI's startup) does not load torch
    if name in ("Caption", "Captioner"):
        from captioner import inference

        return getattr(inference, name)
    raise AttributeError(f"module 'captioner' has no attribute {name!r}")

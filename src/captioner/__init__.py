"""captioner: image captions from a frozen CNN encoder and a soft-attention LSTM decoder."""
__version__ = "0.1.0"

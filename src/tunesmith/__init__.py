"""tunesmith: text to music with MusicGen, in plain PyTorch."""

__version__ = "0.1.0"

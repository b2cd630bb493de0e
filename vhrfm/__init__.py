"""vhrfm: an efficient foundation model for very-high-resolution multispectral satellite imagery."""

__version__ = "0.1.0"

"""vhrfm: an efficient foundation model for very-high-resolution multispectral satellite imagery.

``vhrfm.load_encoder("teacher")`` (or a path to a ``.safetensors`` file) restores a pretrained encoder
with its model card; ``vhrfm.create_encoder(name)`` builds a fresh one. Both are imported lazily so
that ``import vhrfm`` stays light for the data tools.
"""

__version__ = "0.1.0"


def load_encoder(path_or_name, map_location: str = "cpu"):
    from vhrfm.checkpoint import load_encoder as _load

    return _load(path_or_name, map_location)


def create_encoder(name: str, **kwargs):
    from vhrfm.models import create_encoder as _create

    return _create(name, **kwargs)

"""carl: emotion-aware text representations (CARL, arXiv 2502.20613).

>>> from carl import AffectEncoder            # doctest: +SKIP
>>> AffectEncoder.load("minilm-l6").encode(["What a lovely day!"]).shape   # doctest: +SKIP
(1, 384)
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("carl")
except PackageNotFoundError:  # running from a source tree without installation
    __version__ = "0.0.0+unknown"

__all__ = ["AffectEncoder", "__version__"]


def __getattr__(name: str):
    """Import the torch-backed API lazily so that ``import carl`` stays light."""
    if name == "AffectEncoder":
        from carl.inference import AffectEncoder

        return AffectEncoder
    raise AttributeError(f"module 'carl' has no attribute {name!r}")

"""The huihua version (one place; the package, the infotext and the JSON records read it)."""

__version__ = "0.1.0"

"""ravine: gradient-descent optimization library and lab."""

__version__ = "0.1.0"

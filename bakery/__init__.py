"""osquery-bakery: bake osquery and its log shipping into tested machine images."""

__version__ = "0.1.0"

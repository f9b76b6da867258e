"""k2node: a Koii K2 task node and task SDK in Python."""

__version__ = "0.1.0"

"""k2node: a Koii K2 task node and task SDK in Python."""

import sys

__version__ = "0.1.0"

# structlog's console renderer imports rich when it is installed, for coloured tracebacks:
# some 3 MB in every node and task process. k2node's logs print tracebacks plainly; rich
# loads only where a table or a progress bar is drawn.
if "structlog" not in sys.modules and "rich" not in sys.modules:
    sys.modules["rich"] = None  # type: ignore[assignment]
    try:
        import structlog  # noqa: F401
    finally:
        del sys.modules["rich"]

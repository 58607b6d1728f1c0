"""The one place figures get their plotting module: matplotlib's pyplot on the headless Agg backend, or None.

matplotlib is an optional dependency (the ``plot``, ``train`` and ``test`` extras); every command that writes a PNG
calls :func:`pyplot` and, when it returns None, says so on stderr and goes on without the figure.
"""

from __future__ import annotations

import sys
from typing import Any


def pyplot(what: str = "figure") -> Any | None:
    """``matplotlib.pyplot`` with the Agg backend (no display on servers; it must be chosen before pyplot is
    imported), or None after telling stderr that ``what`` is not drawn."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print(f"matplotlib is not installed; no {what} (pip install matplotlib)", file=sys.stderr)
        return None
    return plt

"""When to draw progress bars by default."""

from __future__ import annotations

import sys


def interactive() -> bool:
    """Whether someone is watching: stderr is a terminal, or this runs in a Jupyter kernel.

    A notebook's stderr is not a terminal, yet ``tqdm.auto`` draws a widget there; scripts,
    CI logs and pipes get no bar.
    """
    try:
        if sys.stderr is not None and sys.stderr.isatty():
            return True
    except (AttributeError, ValueError):  # a replaced or closed stderr
        pass
    ipython = sys.modules.get("IPython")
    get = getattr(ipython, "get_ipython", None)
    shell = get() if callable(get) else None
    return shell is not None and hasattr(shell, "kernel")

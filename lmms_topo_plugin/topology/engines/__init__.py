"""Zigzag barcode engines, one module each, behind one call: :func:`raw_barcode`.

``quiver`` (:mod:`.quiver`, the default) needs no dionysus: numpy homology of every complex and the quiver's
decomposition. ``fast`` (the FastZigzag cone) and ``classic`` are dionysus' (:mod:`.dionysus_zigzag`) and
cross-check it; every engine gives the same bars.
"""

from __future__ import annotations

import sys

import numpy as np

from lmms_topo_plugin.errors import MissingDependencyError
from lmms_topo_plugin.topology.engines.quiver import quiver_barcode
from lmms_topo_plugin.topology.zigzag import ZigzagInput

ENGINES = ("quiver", "fast", "classic")
DEFAULT_ENGINE = "quiver"
DIONYSUS_ENGINES = ("fast", "classic")
INSTALL_HINT = ("topo_engine=fast|classic needs dionysus (zigzag persistent homology), which does not import here "
                "(the default topo_engine=quiver does not); install it with `topo-prune install-topology` (or "
                f"`{sys.executable} -m lmms_topo_plugin.cli.main install-topology`): it builds dionysus==2.2.3 "
                "from source, or prints the steps this platform needs first")


def require_dionysus():
    """The dionysus module, or a :class:`MissingDependencyError` that says how to install it."""
    try:
        import dionysus
    except ImportError as error:
        raise MissingDependencyError(INSTALL_HINT) from error
    return dionysus


def raw_barcode(zigzag: ZigzagInput, engine: str = DEFAULT_ENGINE) -> dict[int, np.ndarray]:
    """Bars ``[B, 2]`` (birth time, death time; ``inf`` = never dies) of H0 and H1; every engine gives the same."""
    if engine not in ENGINES:
        raise ValueError(f"unknown zigzag engine {engine!r}; expected one of {', '.join(ENGINES)}")
    if engine == "quiver":
        return quiver_barcode(zigzag.num_depths, zigzag.simplices, zigzag.times, zigzag.offsets)
    from lmms_topo_plugin.topology.engines.dionysus_zigzag import dionysus_barcode

    return dionysus_barcode(require_dionysus(), zigzag, cone=engine == "fast")

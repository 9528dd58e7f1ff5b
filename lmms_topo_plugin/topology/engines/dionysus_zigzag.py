"""dionysus' zigzag persistence: the FastZigzag cone (``fast``) or the classic algorithm (``classic``)."""

from __future__ import annotations

from types import ModuleType

import numpy as np

from lmms_topo_plugin.topology.zigzag import ZigzagInput


def dionysus_barcode(dionysus: ModuleType, zigzag: ZigzagInput, *, cone: bool) -> dict[int, np.ndarray]:
    """Bars ``[B, 2]`` of H0 and H1 by dionysus: through the cone when ``cone``, else the classic zigzag."""
    filtration = dionysus.Filtration(zigzag.simplex_lists())
    times = zigzag.time_lists()
    if cone:
        cone_filtration = dionysus.fast_zigzag(filtration, times)
        reduced = dionysus.homology_persistence(cone_filtration)
        diagrams = [[point for kind in groups.values() for point in kind]
                    for groups in dionysus.init_zigzag_diagrams(reduced, cone_filtration)]
    else:
        diagrams = dionysus.zigzag_homology_persistence(filtration, times)[1]
    return {
        dim: np.array([(p.birth, p.death) for p in diagrams[dim]] if dim < len(diagrams) else [],
                      dtype=np.float64).reshape(-1, 2)
        for dim in (0, 1)
    }

"""TIES (Yadav et al. 2023): trim each vector to its top `density` by magnitude, elect each
entry's sign by the summed scaled vectors, average the entries that agree (disjoint mean:
`common.elected`)."""

from __future__ import annotations

from deltalab.merging.methods.common import trim_


def prepare(taus, params, uniforms=None):
    for t in taus:
        trim_(t, params.density)
    return taus

"""Loss-landscape probes: pure functions of a parameters dict or of loss-along-a-line arrays.

Modules (read in pipeline order):
  directions.py  random direction families (`paper`, `gauss`, `gauss-filter`, `sign-flip`), unit global L2 norm
  scan.py        batched 1-D scans L(w + l·u) over many (direction, step) points
  probes.py      higher-level probes built on scans (shift gap, neighbours, interpolation)
  asymmetry.py   He et al. 2019, Definition 1: the asymmetry index c_u of a direction from its loss line,
                 and the per-direction radius rule R (`radius_for_rise`)

Nothing is imported here on purpose: each module is imported by its full name
(`from core.landscape.asymmetry import asymmetry_index`) so that a missing or broken sibling never
breaks the others.
"""

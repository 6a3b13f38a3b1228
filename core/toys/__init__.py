"""Closed-form and synthetic landscapes (the `toy` tier): seconds on a CPU, exact where possible.

Modules:
  wedge.py     Fort & Jastrzebski 2019 §3.2: the n-wedge surrogate L_toy(P)
  valleys.py   He et al. 2019 Theorem 1 (separable asymmetric valleys, exact expectation over all 2^d
               random shifts) and Theorem 2 (vectorised SGD on a 1-D asymmetric valley, iterate averages)
  twoparam.py  He et al. 2019 App. A: the 2-parameter logistic "network", batched over seeds and directions

All toys compute in float64 and take an explicit `torch.Generator`; nothing here seeds a global RNG.
Nothing is imported here on purpose: import each module by its full name.
"""

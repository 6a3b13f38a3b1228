"""The library of the loss-landscape replication suite: everything that computes.

Pipeline (files read top to bottom): data -> models -> train -> landscape -> toys -> stats -> registry
-> cache -> report/plots. `core` never imports `claims/` or `fixtures/`.
"""

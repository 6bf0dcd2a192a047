"""Aligners (method.md 1.4): warp one anatomy factor onto another.

``tps`` (the paper's thin-plate-spline STN), ``affine`` and ``identity`` (ablations).
Modules are imported lazily by the registry.
"""

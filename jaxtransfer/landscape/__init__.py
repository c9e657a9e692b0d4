"""Loss-landscape probes for any pytree of parameters (no Flax needed): interpolation paths and barriers, planes
through models or along (filter-normalised random, or PCA) directions, trajectories, and Hessian eigenvalues.

Only floating-point leaves move; other leaves (counters, RNG keys) come from the first parameter set.
"""

from jaxtransfer.landscape._hessian import (
    hessian_eigenvalue_plane,
    hessian_extreme_eigenvalues,
    hessian_top_eigenvalues,
)
from jaxtransfer.landscape._interpolation import (
    POINT_MAPS,
    Path,
    Plane,
    barrier,
    evaluate_points,
    interpolate,
    linear_path,
    plane,
    random_directions,
)
from jaxtransfer.landscape._trajectory import pca_directions, project_trajectory

__all__ = [
    "POINT_MAPS",
    "Path",
    "Plane",
    "barrier",
    "evaluate_points",
    "hessian_eigenvalue_plane",
    "hessian_extreme_eigenvalues",
    "hessian_top_eigenvalues",
    "interpolate",
    "linear_path",
    "pca_directions",
    "plane",
    "project_trajectory",
    "random_directions",
]

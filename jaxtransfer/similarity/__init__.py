"""Feature similarity (CKA: linear, RBF, debiased, minibatch, layer-by-layer matrices) and parameter distances, on
arrays and pytrees (no Flax needed)."""

from jaxtransfer.similarity._cka import BANDWIDTHS, CKAMatrix, cka, cka_matrix, minibatch_cka
from jaxtransfer.similarity._distance import param_distance

__all__ = ["BANDWIDTHS", "CKAMatrix", "cka", "cka_matrix", "minibatch_cka", "param_distance"]

"""jaxtransfer: transfer learning in JAX — which pre-trained model to fine-tune, and how."""

from jaxtransfer.score import LogME, LogMEEvidence, logme, logme_evidence

__version__ = "0.1.0"

__all__ = ["LogME", "LogMEEvidence", "__version__", "logme", "logme_evidence"]

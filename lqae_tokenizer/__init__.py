"""lqae-tokenizer: images as tokens of a frozen language model's vocabulary (LQAE).

Public API: :class:`ImageTokenizer`, :class:`LQAEConfig`, :func:`nearest_code` and
:class:`Codebook`. Importing this package never imports triton.
"""

from .config import LQAEConfig
from .images import InvalidImageError
from .checkpoint import CheckpointError
from .search import Codebook, nearest_code
from .tokenizer import ImageTokenizer

__all__ = ["ImageTokenizer", "LQAEConfig", "nearest_code", "Codebook", "InvalidImageError", "CheckpointError"]
__version__ = "0.1.0"

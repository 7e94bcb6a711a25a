from .cache_pointer import ContinuousCachePointer
from .embedding_dropout import EmbeddingDropout
from .locked_dropout import LockedDropout
from .split_softmax import SplitSoftmax
from .weight_drop import WeightDrop

__all__ = ["ContinuousCachePointer", "EmbeddingDropout", "LockedDropout", "SplitSoftmax", "WeightDrop"]

from .boom import Boom
from .cache_pointer import ContinuousCachePointer
from .embedding_dropout import EmbeddingDropout
from .locked_dropout import LockedDropout
from .qrnn import QRNNLayer
from .sha_block import ShaBlock
from .single_head_attention import SingleHeadAttention
from .split_softmax import SplitSoftmax
from .sru import SRU, SRULayer, sru_recurrence
from .srupp import SRUpp, attention_mask
from .weight_drop import WeightDrop

__all__ = [
    "Boom", "ContinuousCachePointer", "EmbeddingDropout", "LockedDropout", "QRNNLayer", "ShaBlock",
    "SingleHeadAttention", "SplitSoftmax", "SRU", "SRULayer", "sru_recurrence", "SRUpp", "attention_mask",
    "WeightDrop",
]

"""Small builders shared by tests (not fixtures)."""

from fairseq.data import Dictionary
from omegaconf import OmegaConf


def dictionary_of_size(n: int) -> Dictionary:
    """A fairseq dictionary with exactly ``n`` symbols (its 4 specials included)."""
    d = Dictionary()
    for i in range(n - len(d)):
        d.add_symbol(f"w{i}")
    assert len(d) == n
    return d


def model_cfg(dataclass, **overrides):
    """A model config as fairseq passes it: the dataclass defaults with ``overrides``."""
    cfg = OmegaConf.structured(dataclass)
    for k, v in overrides.items():
        setattr(cfg, k, v)
    return cfg

"""HyenaDNA: configuration, the network, its tokenizer and checkpoint I/O."""

from .config import HyenaConfig
from .hyena import HyenaDNA
from .tokenizer import Tokenizer

__all__ = ["HyenaConfig", "HyenaDNA", "Tokenizer"]

"""wav2vec2_lite: wav2vec 2.0 (Baevski et al., 2020) in small, exact, fast PyTorch modules."""

from wav2vec2_lite.config import ConfigError, Wav2Vec2Config

__version__ = "0.1.0"
__all__ = ["ConfigError", "Wav2Vec2Config", "__version__"]

"""wav2vec2_lite: wav2vec 2.0 (Baevski et al., 2020) in small, exact, fast PyTorch modules."""

from wav2vec2_lite.config import ConfigError, Wav2Vec2Config
from wav2vec2_lite.interop import sources as _sources  # noqa: F401  (registers the reader of from_pretrained)
from wav2vec2_lite.models import Wav2Vec2ForCTC, Wav2Vec2ForPreTraining, Wav2Vec2Model
from wav2vec2_lite.outputs import CTCOutput, PreTrainingOutput, Wav2Vec2ModelOutput

__version__ = "0.1.0"
__all__ = [
    "ConfigError",
    "Wav2Vec2Config",
    "Wav2Vec2Model",
    "Wav2Vec2ForPreTraining",
    "Wav2Vec2ForCTC",
    "Wav2Vec2ModelOutput",
    "PreTrainingOutput",
    "CTCOutput",
    "__version__",
]

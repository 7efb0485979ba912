"""Generate: DCGAN, conditional DCGAN and fully-connected cGAN. One module per job — `training` (`train`),
`sampling` (`sample`), `evaluation` (`evaluate`) — and the networks in `models`."""
from .evaluation import EvaluateConfig, EvaluateResult, evaluate
from .sampling import SampleConfig, SampleResult, sample
from .training import GanConfig, TrainResult, train

__all__ = ["EvaluateConfig", "EvaluateResult", "GanConfig", "SampleConfig", "SampleResult", "TrainResult",
           "evaluate", "sample", "train"]

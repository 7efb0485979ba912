"""Generate: DCGAN, conditional DCGAN and fully-connected cGAN — `train`, `sample`, `evaluate`."""
from .api import evaluate, sample, train
from .evaluation import EvaluateConfig, EvaluateResult
from .sampling import SampleConfig, SampleResult
from .training import GanConfig, TrainResult

__all__ = ["EvaluateConfig", "EvaluateResult", "GanConfig", "SampleConfig", "SampleResult", "TrainResult",
           "evaluate", "sample", "train"]

"""The generate capability, one call per job: `cnnlab.gan.train`, `cnnlab.gan.sample`, `cnnlab.gan.evaluate`."""
from __future__ import annotations

import os
from pathlib import Path

from ..core.jobs import configure, with_options
from ..core.runs import RunDir
from .evaluation import EvaluateConfig, EvaluateResult, evaluate_generator
from .sampling import SampleConfig, SampleResult, sample_images
from .training import GanConfig, TrainResult, train_run


@with_options(GanConfig)
def train(*, config: GanConfig | None = None, out: str | os.PathLike | None = None, resume: bool = False,
          progress: bool = False, **options) -> TrainResult:
    """Train a DCGAN, cDCGAN or cGAN into the run directory `out` (default runs/gan-<time>), writing checkpoints,
    grids, TensorBoard logs, config.json and metrics.json as it goes. `resume=True` continues the checkpoint in
    `out` and ends with exactly the weights of an uninterrupted run; it refuses a checkpoint trained otherwise."""
    cfg = configure(GanConfig, config, options)
    run = Path(out) if out is not None else RunDir.create(None, "gan").path
    return train_run(cfg, run, resume=resume, progress=progress)


@with_options(SampleConfig)
def sample(checkpoint: str | os.PathLike | None = None, *, config: SampleConfig | None = None,
           **options) -> SampleResult:
    """Images from a generator checkpoint (default: the cDCGAN-MNIST generator shipped with cnnlab): `.images`
    (N,C,H,W) in [0,1]; `.save(dir)` writes the PNGs and the grid."""
    if checkpoint is not None:
        options["checkpoint"] = str(checkpoint)
    return sample_images(configure(SampleConfig, config, options))


@with_options(EvaluateConfig)
def evaluate(checkpoint: str | os.PathLike | None = None, *, config: EvaluateConfig | None = None,
             progress: bool = False, **options) -> EvaluateResult:
    """Conditional accuracy and Fréchet distance of a conditional MNIST generator (the judge is a small MNIST
    classifier, trained once and cached); for an image generator, the Fréchet distance to its training images in an
    ImageNet backbone's features."""
    if checkpoint is not None:
        options["checkpoint"] = str(checkpoint)
    return evaluate_generator(configure(EvaluateConfig, config, options), progress)

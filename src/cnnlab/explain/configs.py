"""The explain jobs' configs: saliency, fool, classviz. Each field is an option of the API call and of the CLI."""
from __future__ import annotations

from dataclasses import dataclass

from ..core.config import option
from ..core.jobs import ModelOptions
from .attacks import LOSSES, METHODS as ATTACKS, NORMS
from .classviz import ClassVizOptions
from .saliency import METHODS, SaliencyOptions

INPUTS_HELP = "image files, folders, or an .npz with X (N,H,W,3) uint8 and y (the labs' imagenet_val_25.npz)"


@dataclass
class SaliencyConfig(SaliencyOptions, ModelOptions):
    """Saliency maps for one target per image, through Captum:
      vanilla     |∂score/∂pixel|, max over channels (Simonyan et al. 2014; the report's)
      smoothgrad  vanilla averaged over noisy copies (Smilkov et al. 2017)
      ig          Integrated Gradients from a blurred copy (Sundararajan et al. 2017; --ig-baseline)
      gradcam     Grad-CAM (Selvaraju et al. 2017) at the last maps (Lite: head+block6; --layer to change: a named
                  cut point or any module path, e.g. layer4)
      occlusion   score drop when 32×32 patches are replaced by a blurred copy (Zeiler & Fergus 2014)
      smoothgrad-gradcam  SmoothGrad × Grad-CAM, each scaled to max 1 (the most faithful measured)
    --metrics adds deletion/insertion AUC (Petsiuk et al. 2018) with 16×16 patches and a blurred baseline, plus the
    same for random patch orders (--random-orders). Writes saliency.png (image, overlay, map) and one PNG per map."""

    command = "explain saliency"
    inputs: list[str] = option(default_factory=list, positional=True, required=True, metavar="INPUTS", help=INPUTS_HELP)
    method: str = option("vanilla", choices=METHODS, help="attribution method")
    target: str = option("pred", help="'pred' (the model's prediction) or a class of the model (index or name)")
    metrics: bool = option(False, help="deletion/insertion AUC vs a random patch order")
    random_orders: int = option(4, low=1, help="--metrics: random patch orders averaged for the baseline")
    limit: int | None = option(None, low=1, help="only the first N images")
    batch_size: int = option(8, low=1, help="images per batch")
    chunk_size: int = option(256, low=1, help="with --out: images per committed chunk (what a rerun skips, what a "
                                              "torchrun process takes)")


@dataclass
class FoolConfig(ModelOptions):
    """Adversarial images in [0,1] pixel space, made on the image itself: the perturbation lives at the input's own
    size and the model sees it through its own preprocessing (the resize and crop that classify reads files with).
    Success is judged on the saved file: the 8-bit PNG, read back by the normal reading path, must give the target.
      minimal   sign steps inside an L∞ ball that grows 1/255 at a time: the smallest 8-bit change
      ascent    the report's normalized gradient ascent on the target score (--lr)
      fgsm      one signed step of size --eps (Goodfellow et al. 2015)
      pgd       --max-iters projected steps in the --eps ball (Madry et al. 2018)
      transfer  made to fool other models: --max-iters L∞ steps in the --eps ball (default 16/255) with the logit
                loss, momentum, input diversity and translation-invariant gradients (--loss, --momentum,
                --diversity, --ti-kernel; 0 turns one off)
    --backbone a+b attacks the ensemble (mean of logits, each model through its own preprocessing); --eval-on B2,B3
    reads every saved image through other models and reports the targeted and untargeted transfer rates.
    Writes fooling.png (original | adversarial | magnified difference), the adversarial PNGs (at the input's size)
    and, with --eval-on, transfer.md."""

    command = "explain fool"
    inputs: list[str] = option(default_factory=list, positional=True, required=True, metavar="INPUTS", help=INPUTS_HELP)
    backbone: str = option("efficientnet_lite0", help="the model attacked, or several joined by '+' (an ensemble)")
    target: str | None = option(None, required=True,
                                help="a class of the model (index or name), 'random' (seeded), or 'none' (untargeted)")
    seed: int = option(0, help="seed for random targets and input diversity")
    method: str = option("minimal", choices=ATTACKS, help="attack")
    max_iters: int = option(100, low=1, help="gradient steps at most (transfer: exactly)")
    lr: float = option(1.0, low=0, low_open=True, help="ascent step (L2 norm, pixel units)")
    eps: float | None = option(None, low=0, low_open=True,
                               help="fgsm/pgd/transfer bound in [0,1] pixel units (default 8/255 for L∞, 1.0 for L2; "
                                    "transfer 16/255)")
    norm: str = option("linf", choices=NORMS, help="fgsm/pgd norm")
    step: float | None = option(None, low=0, low_open=True,
                                help="step size in pixel units (default: minimal 0.25/255, pgd eps/4, transfer 2/255)")
    loss: str | None = option(None, choices=LOSSES, help="pgd/fgsm/transfer objective (default: ce; logit for transfer)")
    momentum: float = option(1.0, low=0, help="transfer: momentum of the gradient (MI-FGSM; 0 = off)")
    diversity: float = option(0.7, low=0, high=1, help="transfer: probability of a random shrink-and-pad per step "
                                                       "(input diversity; 0 = off)")
    ti_kernel: int = option(5, low=0, help="transfer: side of the Gaussian that smooths the gradient (translation "
                                           "invariance; 0 = off)")
    eval_on: list[str] = option(default_factory=list, metavar="B2[,B3]",
                                help="models (not attacked) that read every saved image: targeted and untargeted "
                                     "transfer rates")
    limit: int | None = option(None, low=1, help="only the first N images")
    batch_size: int = option(8, low=1, help="images per batch")
    chunk_size: int = option(256, low=1, help="with --out: images per committed chunk (what a rerun skips, what a "
                                              "torchrun process takes)")
    magnify: float = option(10.0, low=0, low_open=True, help="how much the figure magnifies the difference")


@dataclass
class ClassVizConfig(ClassVizOptions, ModelOptions):
    """Gradient ascent on a class score from random noise with L2 regularization, jitter, periodic blur and
    clamping (the report's Q3.8-Q3.11). The result is classified by a different model (--judge) to tell whether
    the class is recognizable beyond the model that drew it."""

    command = "explain classviz"
    classes: list[str] = option(default_factory=list, flag="--class", append=True, required=True,
                                metavar="NAME|INDEX", help="class: index, synset or (part of a) name; repeatable")
    backbone: str = option("efficientnet_lite0", help="generator backbone(s), comma-separated, shown side by side")
    judge: str | None = option(None, help="model that judges recognizability (default: efficientnet_lite2, or "
                                          "efficientnet_lite1 if lite2 draws)")

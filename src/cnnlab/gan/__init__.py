"""Generate: DCGAN, conditional DCGAN and fully-connected cGAN — train, sample, evaluate."""

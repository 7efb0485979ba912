"""Explain a classifier: saliency maps (and how faithful they are), fooling images, class-model visualization."""

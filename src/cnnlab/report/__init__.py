"""Reproducing the lab report: the experiment registry, the runner, the static HTML page."""

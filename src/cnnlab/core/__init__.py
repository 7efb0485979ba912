"""The core every capability stands on: backbones, data, images, hooks, run directories."""

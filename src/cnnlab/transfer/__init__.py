"""Transfer learning by feature extraction: cut a pretrained CNN at any layer, train a linear SVM."""

"""Frozen-feature protocols: features extracted once per (checkpoint, dataset, transform) and cached, then the
VOC07 SVM, the low-shot SVM and weighted kNN on them."""

"""Semantic segmentation transfer on detectron2's semantic-segmentation machinery (imports detectron2 lazily: the
evaluator module checks it is installed before importing the head, dataset and trainer modules)."""

"""Detection transfer with detectron2 (imports detectron2 lazily: the evaluator module checks it is installed
before importing the model, dataset and trainer modules)."""

"""kNN monitor: top-1 of the query encoder's pooled features on a held-out split, every few epochs.

Features are the global-average-pooled backbone output (the encoder without its fc head), L2-normalized, as in
the kNN protocol (evaluate/imagenet_knn.yaml); the vote is the kNN evaluator's (moco_bench.evaluators.frozen.knn).
"""

from __future__ import annotations

import copy
from typing import Mapping

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader

from moco_bench.core.errors import DataError
from moco_bench.data.catalog import open_split
from moco_bench.data.transforms import eval_transform
from moco_bench.evaluators.neighbours import knn_top1


class KnnMonitor:
    """Holds the two eval datasets (opened once, at start-up, so a wrong path fails before training)."""

    def __init__(self, data: Mapping, test: Mapping, *, k: int, T: float, mean, std, batch_size: int, workers: int):
        transform = eval_transform(test, mean, std)
        self.train = open_split(data, data["train_split"], transform, "monitor")
        self.val = open_split(data, data["test_split"], transform, "monitor")
        if list(self.train.classes) != list(self.val.classes):
            raise DataError(f"kNN monitor: {data['root']}: the {data['train_split']} and {data['test_split']} splits "
                            "have different classes")
        if k > len(self.train):
            raise DataError(f"kNN monitor: k={k} is larger than {data['root']}/{data['train_split']} "
                            f"({len(self.train)} images)")
        self.k, self.T, self.batch_size, self.workers = k, T, batch_size, workers

    @torch.no_grad()
    def features(self, backbone: nn.Module, dataset, device):
        # A private generator: the monitor must not advance the training's random streams (exact resume).
        loader = DataLoader(dataset, self.batch_size, num_workers=self.workers,
                            generator=torch.Generator().manual_seed(0))
        feats, labels = [], []
        for images, targets in loader:
            feats.append(F.normalize(backbone(images.to(device)), dim=1).float().cpu())
            labels.append(targets)
        return torch.cat(feats), torch.cat(labels)

    def __call__(self, encoder: nn.Module, device) -> float:
        """kNN top-1 (%) of ``encoder`` (a torchvision ResNet) with its fc head removed, in eval mode."""
        backbone = copy.deepcopy(encoder).eval()
        backbone.fc = nn.Identity()
        train_feats, train_labels = self.features(backbone, self.train, device)
        val_feats, val_labels = self.features(backbone, self.val, device)
        return float(knn_top1(train_feats, train_labels, val_feats, val_labels, self.k, self.T))

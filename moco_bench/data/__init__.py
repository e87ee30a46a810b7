"""Datasets: the real formats' readers (ImageFolder, VOCdevkit, COCO, Places205, iNat) and the embedded data."""

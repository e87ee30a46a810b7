"""Places205 and iNaturalist 2018 readers on small files in their real on-disk formats."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from PIL import Image

from moco_bench.core.errors import DataError, DatasetNotFound
from moco_bench.data.catalog import open_split
from moco_bench.data.inat import INaturalist, read_inat_json
from moco_bench.data.listed import read_list_file
from moco_bench.data.places205 import IMAGE_DIR, LIST_DIR, Places205
from moco_bench.data.transforms import eval_transform

# Places205 names classes by their folder under images256/, some two levels deep.
PLACES_CLASSES = ["a/abbey", "a/apartment_building/outdoor", "s/shoe_shop"]


def val_transform_32():
    return eval_transform({"resize": 32, "crop": 32}, [0.5] * 3, [0.25] * 3)


def _open(reader, root, split, classes=None, transform=None, **options):
    """A split through the reader registry and its shared checks (class count, first image, image count)."""
    data = {"reader": reader, "root": str(root), "classes": classes, "options": options, "expect": None}
    return open_split(data, split, transform)


def _jpegs(imagefolder_root: Path, n: int):
    return [Image.open(p).convert("RGB") for p in sorted((imagefolder_root / "train").rglob("*.png"))[:n]]


@pytest.fixture
def places_list_root(tmp_path, imagefolder_root):
    """The official Places205 layout: images256/<letter>/<class>/ and space-separated split files."""
    root = tmp_path / "places205"
    images = _jpegs(imagefolder_root, 9)
    lines = {"train": [], "val": []}
    for i, img in enumerate(images):
        label = i % 3
        rel = f"{PLACES_CLASSES[label]}/gsun_{i:032x}.jpg"
        (root / IMAGE_DIR / rel).parent.mkdir(parents=True, exist_ok=True)
        img.save(root / IMAGE_DIR / rel, quality=90)
        lines["val" if i >= 6 else "train"].append(f"{rel} {label}\n")
    (root / LIST_DIR).mkdir(parents=True)
    for split, rows in lines.items():
        (root / LIST_DIR / f"{split}_places205.csv").write_text("".join(rows))
    return root


def test_places205_list_layout(places_list_root):
    ds = _open("places205", places_list_root, "train", 3, transform=val_transform_32())
    assert ds.layout == "list" and len(ds) == 6
    assert ds.classes == PLACES_CLASSES and ds.targets == [0, 1, 2, 0, 1, 2]
    img, label = ds[4]
    assert img.shape == (3, 32, 32) and img.dtype == torch.float32 and label == 1
    val = Places205(places_list_root, "val")
    assert len(val) == 3 and val.classes == PLACES_CLASSES


def test_places205_list_errors(places_list_root):
    split = places_list_root / LIST_DIR / "train_places205.csv"
    good = split.read_text()
    with pytest.raises(DataError, match="expects 205"):
        _open("places205", places_list_root, "train", 205)
    split.write_text(good + "a/abbey/only_a_path.jpg\n")
    with pytest.raises(DataError, match=r"train_places205.csv:7: expected '<relative image path> <integer label>'"):
        read_list_file(split)
    split.write_text(good.replace(" 1\n", " 3\n"))  # labels 0, 2, 3: label 1 missing
    with pytest.raises(DataError, match=r"labels must run 0..K-1.*absent: \[1\]"):
        Places205(places_list_root, "train")
    split.write_text("")
    with pytest.raises(DataError, match="lists no images"):
        Places205(places_list_root, "train")
    with pytest.raises(DatasetNotFound, match="split file not found"):
        Places205(places_list_root, "test")
    split.write_text(good)
    bad = places_list_root / IMAGE_DIR / good.split()[2]
    bad.write_text("not a jpeg")
    with pytest.raises(DataError, match="unreadable image"):
        Places205(places_list_root, "train")[1]


def test_places205_folder_layout(imagefolder_root, tmp_path):
    ds = _open("places205", imagefolder_root, "val", 10, layout="auto")
    assert ds.layout == "folder" and len(ds) == 100 and len(ds.classes) == 10
    assert ds.targets == sorted(ds.targets)
    with pytest.raises(DataError, match="config expects 205"):
        _open("places205", imagefolder_root, "val", 205)
    with pytest.raises(DatasetNotFound):
        Places205(tmp_path / "nowhere", "train")


def _inat_doc(images, anns, cats):
    return {"info": {"year": 2018, "version": "1.0", "description": "iNat 2018 (moco-bench test)", "contributor": "",
                     "url": "", "date_created": "2018-02-01 00:00:00"},
            "images": images, "annotations": anns, "categories": cats,
            "licenses": [{"id": 1, "name": "CC BY 4.0", "url": "https://creativecommons.org/licenses/by/4.0/"}]}


@pytest.fixture
def inat_root(tmp_path, imagefolder_root):
    """train2018.json / val2018.json (visipedia/inat_comp 2018 format) with images under train_val2018/."""
    root = tmp_path / "inat2018"
    taxa = [(7, "Plantae"), (2, "Aves"), (5, "Insecta")]  # listed out of id order on purpose
    cats = [{"id": cid, "name": f"species {cid}", "supercategory": sup, "kingdom": "k", "phylum": "p",
             "class": "c", "order": "o", "family": "f", "genus": "g"} for cid, sup in taxa]
    images = _jpegs(imagefolder_root, 8)
    docs = {"train2018.json": ([], []), "val2018.json": ([], [])}
    for i, img in enumerate(images):
        cid, sup = taxa[i % 3] if i < 6 else taxa[0]
        rel = f"train_val2018/{sup}/{cid}/{i:032x}.jpg"
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        img.save(root / rel, quality=90)
        imgs, anns = docs["val2018.json" if i >= 6 else "train2018.json"]
        imgs.append({"id": 100 + i, "width": 32, "height": 32, "file_name": rel, "license": 1,
                     "rights_holder": "someone"})
        anns.append({"id": 1000 + i, "image_id": 100 + i, "category_id": cid})
    for name, (imgs, anns) in docs.items():
        (root / name).write_text(json.dumps(_inat_doc(imgs, anns, cats)))
    return root


def test_inat_reader(inat_root):
    train = _open("inat", inat_root, "train2018.json", 3, transform=val_transform_32())
    assert train.category_ids == [2, 5, 7] and train.classes == ["species 2", "species 5", "species 7"]
    assert len(train) == 6 and train.targets == [2, 0, 1, 2, 0, 1]  # ids 7, 2, 5 -> labels 2, 0, 1
    img, label = train[1]
    assert img.shape == (3, 32, 32) and label == 0
    val = INaturalist(inat_root, inat_root / "val2018.json")  # val lacks two species; labels still agree
    assert val.classes == train.classes and val.targets == [2, 2]


def test_inat_errors(inat_root, tmp_path):
    path = inat_root / "train2018.json"
    doc = json.loads(path.read_text())
    with pytest.raises(DataError, match="has 3 classes, the config expects 8142"):
        _open("inat", inat_root, "train2018.json", 8142)
    cases = [
        ({**doc, "annotations": doc["annotations"][1:]}, r"1 images have no annotation \(first: image 100\)"),
        ({**doc, "annotations": doc["annotations"] + [{"id": 9, "image_id": 100, "category_id": 99}]},
         "names category 99, not in 'categories'"),
        ({**doc, "annotations": doc["annotations"] + [{"id": 9, "image_id": 100, "category_id": 2}]},
         "image 100 has annotations of two categories"),
        ({k: v for k, v in doc.items() if k != "categories"}, r"lists \['categories'\] are missing"),
        ({**doc, "images": [{"id": 100}] + doc["images"][1:]}, "lacks field 'file_name'"),
    ]
    for bad, message in cases:
        path.write_text(json.dumps(bad))
        with pytest.raises(DataError, match=message):
            read_inat_json(path)
    path.write_text("{not json")
    with pytest.raises(DataError, match="train2018.json: not valid JSON"):
        INaturalist(inat_root, "train2018.json")
    with pytest.raises(DatasetNotFound, match="annotation file not found"):
        INaturalist(inat_root, "test2018.json")
    path.write_text(json.dumps(doc))
    (inat_root / doc["images"][0]["file_name"]).unlink()
    with pytest.raises(DataError, match=r"train_val2018/.*\.jpg: unreadable image"):  # the first image, named
        _open("inat", inat_root, "train2018.json")


@pytest.mark.parametrize("reader", ["places205", "inat"])
def test_knn_and_svm_read_every_classification_reader(reader, places_list_root, inat_root, tmp_path):
    """The frozen-feature protocols look their reader up by name: kNN and the VOC07 SVM (one-vs-rest on a
    single-label set) run on the Places205 and iNaturalist files."""
    from moco_bench import evaluators
    from moco_bench.convert import load_backbone
    from moco_bench.evaluators.base import EvalContext
    from moco_bench.evaluators.catalog import load_evaluation

    root, train, test = {"places205": (places_list_root, "train", "val"),
                         "inat": (inat_root, "train2018.json", "val2018.json")}[reader]
    data = [f"data.reader={reader}", f"data.root={root}", f"data.train_split={train}", f"data.test_split={test}",
            "data.classes=3", "data.expect=null", "transform.test.resize=32", "features.batch_size=4"]
    demo = Path(__file__).resolve().parents[1] / "evaluate" / "demo"
    ctx = EvalContext(out_dir=tmp_path / "out", cache_dir=tmp_path / "cache", workers=0)
    backbone = load_backbone("random:resnet18")
    knn = load_evaluation(demo / "imagenet_knn.yaml", [*data, "transform.test.crop=32", "knn.k=[2]"])
    out = evaluators.get("knn")(backbone, knn, ctx)
    assert set(out.metrics) == {"top1@k2", "top5@k2"} and out.info["feature_cache"]["train"] == {"gap": "miss"}
    svm = load_evaluation(demo / "voc07_svm.yaml", [*data, "transform.test.square=32", "svm.costs=[1.0]",
                                                   "svm.cv_folds=2", "features.layers=[gap]"])
    if reader == "inat":  # iNat's val split lacks two species: AP of a class without test images is undefined
        with pytest.raises(DataError, match="no positive example"):
            evaluators.get("voc07_svm")(backbone, svm, ctx)
        return
    result = evaluators.get("voc07_svm")(backbone, svm, ctx)
    assert 0 <= result.metrics["mAP"] <= 100 and set(result.details["gap"]["per_class_ap"]) == set(PLACES_CLASSES)


def test_imagelist_reader_reads_mmselfsup_meta_lists(imagefolder_root, tmp_path):
    """A dataset added as one reader (moco_bench.data.readers ``imagelist``): mmselfsup's meta/{train,val}.txt
    lists over an image folder, opened by name like every other reader, with the shared checks."""
    root = tmp_path / "imagenet"
    for split in ("train", "val"):
        rows = sorted((imagefolder_root / split).rglob("*.png"))[:6]
        classes = sorted({p.parent.name for p in rows})
        (root / "meta").mkdir(parents=True, exist_ok=True)
        (root / "meta" / f"{split}.txt").write_text(
            "".join(f"{split}/{p.parent.name}/{p.name} {classes.index(p.parent.name)}\n" for p in rows))
        for p in rows:
            (root / split / p.parent.name).mkdir(parents=True, exist_ok=True)
            (root / split / p.parent.name / p.name).write_bytes(p.read_bytes())
    ds = _open("imagelist", root, "train", len(classes), transform=val_transform_32())
    assert len(ds) == 6 and ds[0][0].shape == (3, 32, 32) and ds.classes == [f"train/{c}" for c in classes]

"""Untrusted checkpoints: files built to run code are refused and run nothing, in every container the converter
reads (the inert-unpickler fallback included); objects torch.load(weights_only=True) refuses become inert
placeholders that are never imported or called; weights that are not plain tensors are refused by name."""

from __future__ import annotations

import importlib
import os
import pickle
import sys
import uuid
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision
from checkpoint_builders import backbone_state, trained_like

from moco_bench.convert import detectron2_key, load_backbone, read_detectron2_pkl
from moco_bench.core.errors import CheckpointError
from moco_bench.core.inert_pickle import SAFE_STDLIB_OPCODES, InertUnpickler, Placeholder, inert_loads


@pytest.fixture(scope="module")
def r18():
    torch.manual_seed(7)
    return trained_like(torchvision.models.resnet18(), 7)


class _Call:
    """Pickles as ``fn(*args)``: the building block of the payloads (never called while building them)."""

    def __init__(self, fn, *args):
        self.fn, self.args = fn, args

    def __reduce__(self):
        return self.fn, self.args

    def __call__(self, *args):
        raise AssertionError("a payload was called while it was being built")


def _payload(kind: str, marker: Path):
    code = f"open({str(marker)!r}, 'w').close()"
    if kind == "os.system":
        return _Call(os.system, f"touch {marker}")
    if kind == "builtins.eval":
        return _Call(eval, code)
    # getattr(getattr(getattr(<a function torch allows>, '__globals__'), 'get')('__builtins__'), 'get')('eval')
    module_globals = _Call(getattr, torch._utils._rebuild_tensor_v2, "__globals__")
    builtins_dict = _Call(_Call(getattr, module_globals, "get"), "__builtins__")
    return _Call(_Call(_Call(getattr, builtins_dict, "get"), "eval"), code)


PAYLOAD_NAMES = {"os.system": f"{os.system.__module__}.system", "builtins.eval": "builtins.eval",
                 "getattr-chain": "builtins.getattr(..., '__globals__')"}
# (file name, how it is written): torch's zip and legacy formats, a Lightning-style dict, plain pickles.
CONTAINERS = ["evil.pth", "evil.pth.tar", "evil.ckpt", "evil-p2.pkl", "evil-p4.pkl", "evil-tensors.pkl"]


def _write(name: str, payload, model, path: Path) -> None:
    state = model.state_dict()
    if name == "evil.pth":
        torch.save({"state_dict": state, "meta": payload}, path)
    elif name == "evil.pth.tar":  # MoCo layout, legacy (pre-1.6) serialization
        moco = {f"module.encoder_q.{k}": v for k, v in state.items()}
        torch.save({"epoch": 1, "arch": "resnet18", "state_dict": moco, "extra": payload}, path,
                   _use_new_zipfile_serialization=False)
    elif name == "evil.ckpt":
        torch.save({"epoch": 0, "pytorch-lightning_version": "2.6.6", "hyper_parameters": {"cfg": payload},
                    "state_dict": {f"backbone.{k}": v for k, v in backbone_state(model).items()}}, path)
    elif name == "evil-tensors.pkl":  # tensors pickled with plain pickle (storages as embedded torch streams)
        path.write_bytes(pickle.dumps({**state, "x": payload}, protocol=4))
    else:  # a detectron2 weights pickle
        weights = {detectron2_key(k): v.numpy() for k, v in backbone_state(model).items()}
        protocol = 2 if name == "evil-p2.pkl" else 4
        path.write_bytes(pickle.dumps({"model": weights, "__author__": payload}, protocol=protocol))


def _unrestricted_load(path: Path) -> None:
    """What pickle and torch.load(weights_only=False) do with the file: run the payload."""
    if path.suffix == ".pkl":
        with open(path, "rb") as f:
            pickle.load(f)
    else:
        torch.load(path, weights_only=False)


@pytest.mark.parametrize("container", CONTAINERS)
@pytest.mark.parametrize("payload", list(PAYLOAD_NAMES))
def test_files_built_to_run_code_are_refused_and_nothing_runs(payload, container, r18, tmp_path):
    marker = tmp_path / "ran"
    path = tmp_path / container
    _write(container, _payload(payload, marker), r18, path)
    _unrestricted_load(path)
    assert marker.exists(), "the payload does not work, so this test could not fail"
    marker.unlink()

    with pytest.raises(CheckpointError, match="refused: the pickle names .*Nothing from the file was run") as info:
        load_backbone(path)
    assert PAYLOAD_NAMES[payload] in str(info.value)
    assert not marker.exists()


def test_a_refusal_names_every_hostile_global(r18, tmp_path):
    marker = tmp_path / "ran"
    path = tmp_path / "two.pth"
    torch.save({"state_dict": r18.state_dict(), "a": _payload("os.system", marker),
                "b": _payload("builtins.eval", marker)}, path)
    with pytest.raises(CheckpointError) as info:
        load_backbone(path)
    assert PAYLOAD_NAMES["os.system"] in str(info.value) and "builtins.eval" in str(info.value)
    assert not marker.exists()


@pytest.mark.parametrize("zipped", [True, False], ids=["zip", "legacy-format"])
def test_globals_are_never_imported_and_become_placeholders(zipped, r18, tmp_path, monkeypatch):
    """A class from a module with an import side effect: the converter reads the weights without importing it."""
    name = f"mb_side_effect_{uuid.uuid4().hex[:8]}"
    marker = tmp_path / "imported"
    (tmp_path / f"{name}.py").write_text(f"open({str(marker)!r}, 'w').close()\n\nclass Config:\n    pass\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    config = importlib.import_module(name).Config()
    path = tmp_path / "run.ckpt"
    torch.save({"state_dict": r18.state_dict(), "hyper_parameters": {"cfg": config}}, path,
               _use_new_zipfile_serialization=zipped)
    marker.unlink()
    del sys.modules[name]

    converted = load_backbone(path)
    assert not marker.exists() and name not in sys.modules
    assert converted.report.placeholders == [f"{name}.Config"]
    assert "refused GLOBAL " + name in converted.report.reader
    for key, tensor in backbone_state(r18).items():
        assert torch.equal(converted.state_dict[key], tensor), key
    torch.load(path, weights_only=False)  # the import side effect is real
    assert marker.exists()


class _TensorA(torch.Tensor):
    pass


class _TensorB(torch.Tensor):
    pass


class _Dict(dict):
    pass


def test_weights_that_are_not_plain_tensors_are_refused_naming_every_class(r18, tmp_path):
    state = dict(r18.state_dict())
    state["conv1.weight"] = state["conv1.weight"].as_subclass(_TensorA)
    state["bn1.weight"] = state["bn1.weight"].as_subclass(_TensorB)
    path = tmp_path / "subclasses.pth"
    torch.save({"state_dict": state}, path)
    with pytest.raises(CheckpointError, match="weights are not plain tensors: conv1.weight, bn1.weight") as info:
        load_backbone(path)
    assert f"{__name__}._TensorA" in str(info.value) and f"{__name__}._TensorB" in str(info.value)

    container = tmp_path / "dict_subclass.pth"
    torch.save({"state_dict": _Dict(r18.state_dict())}, container)
    with pytest.raises(CheckpointError, match=f"weights are not plain tensors: state_dict .* {__name__}._Dict"):
        load_backbone(container)

    whole_model = tmp_path / "model.pth"
    torch.save(r18, whole_model)
    with pytest.raises(CheckpointError, match="a pickled torchvision.models.resnet.ResNet object .* state_dict"):
        load_backbone(whole_model)


# The standard library's opcode handlers the inert unpickler keeps: each pushes a literal or moves values
# between the stack and the memo (PERSID/BINPERSID call the unpickler's own persistent_load). A new opcode in
# a future Python, or a handler that calls into stack objects, must be reviewed before it is added here.
REVIEWED_STDLIB_HANDLERS = {
    "load_proto", "load_frame", "load_persid", "load_binpersid", "load_none", "load_false", "load_true",
    "load_int", "load_binint", "load_binint1", "load_binint2", "load_long", "load_long1", "load_long4",
    "load_float", "load_binfloat", "load_string", "load_binstring", "load_binbytes", "load_binbytes8",
    "load_unicode", "load_binunicode", "load_binunicode8", "load_bytearray8", "load_short_binstring",
    "load_short_binbytes", "load_short_binunicode", "load_tuple", "load_empty_tuple", "load_tuple1",
    "load_tuple2", "load_tuple3", "load_empty_list", "load_empty_dictionary", "load_empty_set",
    "load_frozenset", "load_list", "load_dict", "load_pop", "load_pop_mark", "load_dup", "load_get",
    "load_binget", "load_long_binget", "load_put", "load_binput", "load_long_binput", "load_memoize",
    "load_mark", "load_stop"}


def test_only_reviewed_stdlib_opcode_handlers_are_kept():
    assert set(InertUnpickler.dispatch) == set(pickle._Unpickler.dispatch)
    assert {InertUnpickler.dispatch[op].__name__ for op in SAFE_STDLIB_OPCODES} == REVIEWED_STDLIB_HANDLERS


def test_getattr_is_a_placeholder_and_calls_on_placeholders_give_placeholders():
    obj, unpickler = inert_loads(b"cbuiltins\ngetattr\n.")
    assert isinstance(obj, Placeholder) and obj.is_global and obj is not getattr
    # getattr(mb_x.Thing, '__globals__')('x'): two REDUCEs, both absorbed; the dunder marks a payload
    obj, unpickler = inert_loads(b"cbuiltins\ngetattr\n(cmb_x\nThing\nS'__globals__'\ntR(S'x'\ntR.")
    assert isinstance(obj, Placeholder) and not obj.is_global and obj.args == ("x",)
    assert unpickler.hostile == ["builtins.getattr(..., '__globals__')"]
    assert unpickler.placeholders == {"builtins.getattr", "mb_x.Thing"} and "mb_x" not in sys.modules
    # NEWOBJ, then BUILD and SETITEMS on the new object: state and items are kept as data
    obj, _ = inert_loads(b"\x80\x02cmb_x\nThing\n)\x81}X\x01\x00\x00\x00aK\x01sb(K\x02K\x03u.")
    assert isinstance(obj, Placeholder) and obj.state == {"a": 1} and obj.items == [2, 3]


@pytest.mark.parametrize("data,match", [
    (b"])R.", "calls a list, which is not a rebuilder"),  # REDUCE on a real object
    (b"}}b.", "cannot set the state of a dict"),  # BUILD on a real object
    (b"}K\x01a.", "cannot add items to a dict"),  # APPEND to something that is not a list
    (b"\x80\x04])}X\x01\x00\x00\x00aK\x01s\x92.", "keyword arguments"),  # NEWOBJ_EX with kwargs on a list
    (b"\x80\x02\x82\x01.", "extension registry"),  # EXT1
])
def test_opcodes_that_would_call_real_objects_are_refused(data, match):
    with pytest.raises(pickle.UnpicklingError, match=match):
        inert_loads(data)


def test_a_rebuilder_given_bad_arguments_yields_a_placeholder_saying_why():
    obj, unpickler = inert_loads(b"ctorch._utils\n_rebuild_tensor_v2\n(K\x01tR.")
    assert isinstance(obj, Placeholder) and obj.name == "torch._utils._rebuild_tensor_v2" and obj.reason


def test_plain_pickles_of_tensors_and_numpy_convert(r18, tmp_path):
    """pickle.dump of a state dict (storages embedded as torch streams) and of numpy arrays both read back."""
    tensors = tmp_path / "state.pkl"
    tensors.write_bytes(pickle.dumps(r18.state_dict(), protocol=4))
    arrays = tmp_path / "arrays.pkl"
    arrays.write_bytes(pickle.dumps({k: v.numpy() for k, v in r18.state_dict().items()}, protocol=2))
    for path in (tensors, arrays):
        converted = load_backbone(path)
        assert converted.format == "torchvision" and converted.report.placeholders == []
        for key, tensor in backbone_state(r18).items():
            assert torch.equal(converted.state_dict[key], tensor) and converted.state_dict[key].dtype == tensor.dtype
    assert np.array_equal(pickle.loads(arrays.read_bytes())["conv1.weight"], r18.conv1.weight.detach().numpy())


class _Reduce:
    """Pickles as ``fn(*args)`` followed by BUILD with ``state``."""

    def __init__(self, fn, args, state):
        self.fn, self.args, self.state = fn, args, state

    def __reduce__(self):
        return self.fn, self.args, self.state


def test_numpy_state_cannot_forge_object_arrays_or_change_numpy(r18, tmp_path):
    """numpy's dtype __setstate__ accepts an object field in a void dtype without flagging it, so raw bytes would
    become object pointers (a crash at best); and BUILD on numpy's shared float64 dtype would change it for the
    whole process. Neither happens: such dtypes are not rebuilt, and every dtype is a private copy."""
    object_field = {"a": (np.dtype("O"), 0)}
    void_with_object = _Reduce(np.dtype, ("V8", False, True), (3, "|", None, ("a",), object_field, 8, 1, 0))
    forged = _Reduce(np.ndarray.__reduce__(np.zeros(1))[0], (np.ndarray, (0,), b"b"),
                     (1, (1,), void_with_object, False, b"\x41" * 8))
    big_endian = _Reduce(np.dtype, ("f8", False, False), (3, ">", None, None, None, -1, -1, 0))
    weights = {detectron2_key(k): v.numpy() for k, v in backbone_state(r18).items()}
    path = tmp_path / "forged.pkl"
    path.write_bytes(pickle.dumps({"model": {**weights, "stem.conv1.weight": forged}, "dtype": big_endian}, protocol=2))

    with pytest.raises(CheckpointError, match="stem.conv1.weight .* are numpy.ndarray objects .*only numeric numpy"):
        load_backbone(path)
    with pytest.raises(CheckpointError, match="refused to load: the pickle asks for GLOBAL numpy.dtype, numpy.ndarray"):
        read_detectron2_pkl(path)
    assert np.dtype("f8").byteorder == "=" and np.dtype("f8").isnative


def test_detectron2_reader_refuses_code_naming_every_global(tmp_path):
    marker = tmp_path / "ran"
    path = tmp_path / "evil.pkl"
    path.write_bytes(pickle.dumps({"model": {"stem.conv1.weight": np.zeros(1)}, "a": _payload("os.system", marker),
                                   "b": _payload("builtins.eval", marker)}, protocol=4))
    with pytest.raises(CheckpointError, match="refused to load: the pickle asks for GLOBAL builtins.eval, "
                                              f"{PAYLOAD_NAMES['os.system']}"):
        read_detectron2_pkl(path)
    assert not marker.exists()

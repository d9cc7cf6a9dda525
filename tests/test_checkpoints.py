"""dog_jax/checkpoints.py, the one checkpoint reader: every format to the same arrays, orbax layouts (item,
step, manager root, a trainer's run directory), what it refuses, in one line each. (Its users: the
kernel analysis, tests/analysis/; conversion, tests/test_convert.py; the trainer's workdirs,
tests/train/.)"""

import json
import re
import struct

import numpy as np
import pytest

from dog_jax.checkpoints import CheckpointError, flatten_names, read_checkpoint, read_state_dict
from tests.support.checkpoints import save_orbax_states


def _arrays(seed=0):
    rng = np.random.default_rng(seed)
    return {"stem/kernel": rng.standard_normal((3, 3, 3, 8)).astype(np.float32),
            "blocks/0/dw/kernel": rng.standard_normal((5, 5, 1, 8)).astype(np.float32)}


def _safetensors(path, arrays, header_extra=None):
    """A safetensors file written by its documented layout (u64 header size, JSON header, data)."""
    header, data, offset = dict(header_extra or {}), b"", 0
    for name, value in arrays.items():
        raw = np.ascontiguousarray(value).tobytes()
        header[name] = {"dtype": {"float32": "F32", "int64": "I64"}[value.dtype.name], "shape": list(value.shape),
                        "data_offsets": [offset, offset + len(raw)]}
        data, offset = data + raw, offset + len(raw)
    text = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(text)) + text + data)


def test_flatten_names_joins_nested_keys_and_list_indices():
    tree = {"a": {"b": 1, "c": [2, {"d": 3}]}, "e": (4,)}
    assert list(flatten_names(tree)) == [("a/b", 1), ("a/c/0", 2), ("a/c/1/d", 3), ("e/0", 4)]
    assert list(flatten_names({"x": 1}, "state")) == [("state/x", 1)]


def test_npz_and_safetensors_give_the_same_float_arrays_and_drop_the_rest(tmp_path):
    arrays = _arrays()
    np.savez(tmp_path / "m.npz", **arrays, counter=np.asarray(7))
    _safetensors(tmp_path / "m.safetensors", {**arrays, "counter": np.asarray([7])},
                 header_extra={"__metadata__": {"format": "np"}})
    for name, kind in (("m.npz", "npz"), ("m.safetensors", "safetensors")):
        checkpoint = read_checkpoint(tmp_path / name)
        assert (checkpoint.format, checkpoint.layout) == (kind, "auto")
        assert sorted(checkpoint.arrays) == sorted(arrays), name  # the integer counter is not a float array
        for key, value in arrays.items():
            np.testing.assert_array_equal(checkpoint.arrays[key], value)
    # read_state_dict keeps everything the file holds.
    assert int(read_state_dict(tmp_path / "m.npz")["counter"]) == 7


def test_a_file_of_another_name_is_recognised_by_its_content(tmp_path):
    arrays = _arrays(1)
    np.savez(tmp_path / "m.npz", **arrays)
    (tmp_path / "weights.data").write_bytes((tmp_path / "m.npz").read_bytes())
    _safetensors(tmp_path / "weights.st", arrays)
    assert read_checkpoint(tmp_path / "weights.data").format == "npz"
    assert read_checkpoint(tmp_path / "weights.st").format == "safetensors"


@pytest.mark.parametrize("name, content, message", [
    ("notes.txt", b"plain text\n", "not a checkpoint this tool can read"),
    ("short.safetensors", b"\x01\x02", "not a safetensors file (too short)"),
    ("long.safetensors", struct.pack("<Q", 10**9) + b"{}", "bad header length"),
    ("text.safetensors", struct.pack("<Q", 8) + b"not json", "header is not JSON"),
    ("list.safetensors", struct.pack("<Q", 2) + b"[]", "header is not a JSON object"),
    ("entry.safetensors", struct.pack("<Q", 16) + b'{"w": {"a": 1}} ', "corrupt safetensors entry 'w'"),
    ("broken.npz", b"PK\x03\x04 truncated", "not a readable .npz file"),
])
def test_unreadable_files_are_refused_in_one_line(tmp_path, name, content, message):
    (tmp_path / name).write_bytes(content)
    with pytest.raises(CheckpointError, match=re.escape(message)) as error:
        read_checkpoint(tmp_path / name)
    assert "\n" not in str(error.value) and name in str(error.value)


def test_pickled_npz_missing_paths_and_directories_are_refused(tmp_path):
    np.savez(tmp_path / "objects.npz", a=np.array([{"x": 1}], dtype=object))
    with pytest.raises(CheckpointError, match="pickled Python objects, which are refused"):
        read_checkpoint(tmp_path / "objects.npz")
    with pytest.raises(CheckpointError, match="no such file or directory"):
        read_checkpoint(tmp_path / "nope.npz")
    with pytest.raises(CheckpointError, match="a directory; a state dict is read from a file"):
        read_state_dict(tmp_path)
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match="not an orbax checkpoint"):
        read_checkpoint(tmp_path / "empty")


def test_orbax_root_step_and_item_directories_read_the_same_arrays(tmp_path, monkeypatch):
    import jax.numpy as jnp

    def state(seed):
        return {"params": {name: jnp.asarray(value) for name, value in _arrays(seed).items()},
                "opt_state": {"mu": jnp.zeros((2,))}, "step": jnp.asarray(seed)}

    save_orbax_states(tmp_path / "ckpt", {10: state(10), 20: state(20)})
    (tmp_path / "ckpt" / "30.orbax-checkpoint-tmp-123").mkdir()  # an unfinished save is ignored
    latest = read_checkpoint(tmp_path / "ckpt")
    assert latest.format == "orbax" and latest.path.name == "20" and latest.layout == "HWIO"
    for key, value in _arrays(20).items():
        np.testing.assert_array_equal(latest.arrays[f"default/params/{key}"], value)
    assert "default/step" not in latest.arrays  # integers are not weights
    older = read_checkpoint(tmp_path / "ckpt" / "10")
    np.testing.assert_array_equal(older.arrays["default/params/stem/kernel"], _arrays(10)["stem/kernel"])
    item = read_checkpoint(tmp_path / "ckpt" / "10" / "default")
    assert sorted(item.arrays) == sorted(name.removeprefix("default/") for name in older.arrays)
    monkeypatch.chdir(tmp_path)  # a relative directory too (orbax reads it as empty unless made absolute)
    assert sorted(read_checkpoint("ckpt/20").arrays) == sorted(latest.arrays)


def test_a_basis_checkpoint_without_its_model_record_is_refused(tmp_path):
    import jax.numpy as jnp

    save_orbax_states(tmp_path / "ckpt", {1: {"params": {"dw": {"basis_coeffs": jnp.ones((3, 8)),
                                                           "basis_log_scale": jnp.zeros(8),
                                                           "basis_gamma": jnp.ones(8)}}}})
    with pytest.raises(CheckpointError, match="basis-parameterised depthwise layers but no model/metadata JSON"):
        read_checkpoint(tmp_path / "ckpt")

"""Checkpoint readers and the command line on bad inputs (one error line, non-zero exit)."""

import argparse
import json

import numpy as np
import pytest

from dog_jax.analysis import extract_depthwise_kernels, read_checkpoint
from dog_jax.analysis.__main__ import main
from dog_jax.analysis.kernels import classify_shape
from tests.support.requires import TORCH, require


def _kernels(rng, c=16, k=7):
    return rng.standard_normal((c, k, k)).astype(np.float32)


def test_shape_rules():
    assert classify_shape((64, 1, 3, 3), "OIHW") == ("depthwise", "OIHW")
    assert classify_shape((7, 7, 1, 64), "HWIO") == ("depthwise", "HWIO")
    assert classify_shape((7, 7, 1, 64), "auto") == ("depthwise", "HWIO")
    assert classify_shape((64, 1, 3, 3), "auto") == ("depthwise", "OIHW")
    # Pointwise convolutions in either layout are not spatial kernels.
    assert classify_shape((16, 32, 1, 1), "OIHW") is None
    assert classify_shape((16, 32, 1, 1), "auto") is None
    assert classify_shape((1, 1, 16, 32), "HWIO") is None
    assert classify_shape((64, 32, 3, 3), "OIHW") == ("regular", "OIHW")
    assert classify_shape((3, 3, 32, 64), "auto") == ("regular", "HWIO")
    assert classify_shape((3, 3, 256, 256), "auto") == ("regular", "HWIO")
    assert classify_shape((256, 256, 3, 3), "auto") == ("regular", "OIHW")
    assert classify_shape((8, 1, 2, 2), "OIHW") is None  # no centre and surround in 2x2
    assert classify_shape((64, 32), "auto") is None


def test_npz_torch_and_safetensors_give_the_same_kernels(tmp_path):
    torch = require("torch", "torch is not installed", TORCH)
    from safetensors.torch import save_file

    rng = np.random.default_rng(0)
    dw = _kernels(rng)                                   # (C, k, k)
    pw = rng.standard_normal((32, 16, 1, 1)).astype(np.float32)
    reg = rng.standard_normal((16, 3, 3, 3)).astype(np.float32)
    torch_sd = {"blocks.0.dw.weight": torch.from_numpy(dw[:, None]), "blocks.0.pw.weight": torch.from_numpy(pw),
                "stem.weight": torch.from_numpy(reg)}
    torch.save({"state_dict": torch_sd, "epoch": 3}, tmp_path / "m.pth")
    save_file({k: v.to(torch.bfloat16) for k, v in torch_sd.items()}, str(tmp_path / "m.safetensors"))
    np.savez(tmp_path / "m.npz", **{"blocks/0/dw/kernel": np.transpose(dw, (1, 2, 0))[:, :, None, :]})

    for name in ("m.pth", "m.safetensors", "m.npz"):
        layers = extract_depthwise_kernels(tmp_path / name)
        assert [layer.kind for layer in layers] == ["depthwise"], name
        np.testing.assert_allclose(layers[0].kernels, dw, rtol=1e-2, atol=1e-2)
    assert extract_depthwise_kernels(tmp_path / "m.pth")[0].name == "state_dict/blocks.0.dw.weight"
    regular = extract_depthwise_kernels(tmp_path / "m.pth", include_regular=True)
    assert [layer.kind for layer in regular] == ["depthwise", "regular"]
    assert regular[1].kernels.shape == (16 * 3, 3, 3)
    assert extract_depthwise_kernels(tmp_path / "m.pth", layers=r"^nothing") == []


def test_orbax_kernels_of_the_latest_step_without_the_optimizer_state(tmp_path):
    import jax.numpy as jnp
    import orbax.checkpoint as ocp

    rng = np.random.default_rng(1)
    old, new = _kernels(rng, 8, 5), _kernels(rng, 8, 5)

    def state(k):
        hwio = jnp.asarray(np.transpose(k, (1, 2, 0))[:, :, None, :])
        return {"params": {"block": {"dwconv": {"kernel": hwio.astype(jnp.bfloat16)},
                                     "pwconv": {"kernel": jnp.ones((1, 1, 8, 16))}}},
                "opt_state": [{"mu": {"block": {"dwconv": {"kernel": jnp.zeros_like(hwio)}}}}],
                "step": jnp.asarray(1)}

    with ocp.CheckpointManager(tmp_path / "ckpt") as mgr:
        mgr.save(10, args=ocp.args.StandardSave(state(old)))
        mgr.save(20, args=ocp.args.StandardSave(state(new)))
        mgr.wait_until_finished()
    # Which directory the reader reads (root, step, item; unfinished saves): tests/test_checkpoints.py.
    ckpt = read_checkpoint(tmp_path / "ckpt")
    layers = extract_depthwise_kernels(ckpt)
    assert [layer.name for layer in layers] == ["default/params/block/dwconv/kernel"]
    np.testing.assert_allclose(layers[0].kernels, new, rtol=1e-2, atol=1e-2)
    assert extract_depthwise_kernels(tmp_path / "ckpt" / "10")[0].kernels.shape == (8, 5, 5)


def test_orbax_trainer_layout_from_the_run_directory(tmp_path):
    """train.py's layout: <workdir>/checkpoints/<step>/{state (pytree), model (JSON)} (docs/training.md)."""
    import jax.numpy as jnp
    import orbax.checkpoint as ocp

    rng = np.random.default_rng(3)
    dw = _kernels(rng, 12, 9)
    ema_dw = _kernels(rng, 12, 9)

    def params(kernels):
        return {"blocks": [{"dw": {"kernel": jnp.asarray(np.transpose(kernels, (1, 2, 0))[:, :, None, :])}}]}

    state = {"step": jnp.asarray(7), "params": params(dw), "batch_stats": {}, "opt_state": {},
             "ema": {"params": params(ema_dw), "batch_stats": {}}}
    (tmp_path / "run" / "tensorboard").mkdir(parents=True)
    with ocp.CheckpointManager(tmp_path / "run" / "checkpoints", item_names=("state", "model")) as mgr:
        mgr.save(7, args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                            model=ocp.args.JsonSave({"model": "convmixer"})))
        mgr.wait_until_finished()
    messages = []
    layers = extract_depthwise_kernels(tmp_path / "run", progress=messages.append)
    assert [layer.name for layer in layers] == ["state/params/blocks/0/dw/kernel"]
    np.testing.assert_allclose(layers[0].kernels, dw)
    assert any("checkpoints/" in m for m in messages)
    assert any("skipped 1 kernel arrays of the model EMA (pass --ema" in m for m in messages)
    # The model EMA (config.ema_decay > 0) on request, instead of the model's weights.
    layers = extract_depthwise_kernels(tmp_path / "run", ema=True)
    assert [layer.name for layer in layers] == ["state/ema/params/blocks/0/dw/kernel"]
    np.testing.assert_allclose(layers[0].kernels, ema_dw)


def _run_cli(capsys, argv):
    code = main(argv)
    captured = capsys.readouterr()
    return code, captured.err.strip().splitlines()


def _bad_inputs(tmp_path):
    torch = require("torch", "torch is not installed", TORCH)
    torch.save({"w": torch.zeros(4, 16), "pw.weight": torch.zeros(8, 4, 1, 1)}, tmp_path / "dense.pth")
    torch.save({"args": argparse.Namespace(lr=0.1), "dw.weight": torch.zeros(4, 1, 3, 3)}, tmp_path / "code.pth")
    (tmp_path / "notes.pth").write_text("this is not a checkpoint\n")
    (tmp_path / "notes.txt").write_text("plain text\n")
    (tmp_path / "empty_dir").mkdir()
    np.savez(tmp_path / "obj.npz", a=np.array([{"x": 1}], dtype=object))
    (tmp_path / "broken.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00not json at all!")
    return {
        "missing": (tmp_path / "nope.pth", "no such file"),
        "no depthwise kernels": (tmp_path / "dense.pth", "no depthwise convolution kernels"),
        "not a checkpoint": (tmp_path / "notes.pth", "not a PyTorch checkpoint"),
        "unknown format": (tmp_path / "notes.txt", "not a checkpoint"),
        "directory": (tmp_path / "empty_dir", "not an orbax checkpoint"),
        "pickled code": (tmp_path / "code.pth", "needs to run Python code"),
        "pickled npz": (tmp_path / "obj.npz", "pickled Python objects"),
        "broken safetensors": (tmp_path / "broken.safetensors", "not a safetensors file"),
    }


def test_bad_inputs_give_one_clear_line_and_nonzero_exit(tmp_path, capsys):
    for case, (path, message) in _bad_inputs(tmp_path).items():
        code, err = _run_cli(capsys, [str(path), "--out", str(tmp_path / "out"), "-q"])
        assert code != 0, case
        assert len(err) == 1, (case, err)
        assert err[0].startswith("error: ") and message in err[0], (case, err)
        assert "Traceback" not in err[0]
    code, err = _run_cli(capsys, [str(tmp_path / "dense.pth"), "--out", str(tmp_path / "o"), "--layers", "(", "-q"])
    assert code != 0 and len(err) == 1 and "regular expression" in err[0]


def test_cli_writes_outputs_for_several_checkpoints(tmp_path, capsys):
    from dog_jax.analysis.templates import dog_templates

    rng = np.random.default_rng(2)
    for i in range(2):
        d = dog_templates((5, 5), rng.uniform(0.1, 0.5, 60)) * np.where(rng.random(60) < 0.5, 1, -1)[:, None, None]
        d = np.concatenate([d, rng.standard_normal((30, 5, 5))]).astype(np.float32)
        np.savez(tmp_path / f"run{i}.npz", **{"stage/dw/kernel": np.transpose(d, (1, 2, 0))[:, :, None, :]})
    out = tmp_path / "report"
    code = main([str(tmp_path / "run0.npz"), str(tmp_path / "run1.npz"), "--out", str(out), "--n-init", "3"])
    printed = capsys.readouterr().out
    assert code == 0
    assert "depthwise 5x5: 90 kernels" in printed and "wrote" in printed
    summary = json.loads((out / "summary.json").read_text())
    assert [c["name"] for c in summary["checkpoints"]] == ["run0", "run1"]
    group = summary["checkpoints"][0]["groups"][0]
    assert group["kernel_size"] == "5x5" and group["n_kernels"] == 90
    assert sum(group["proportions"].values()) == pytest.approx(1.0, abs=1e-3)
    assert group["proportions"]["other"] == pytest.approx(1 / 3, abs=0.05)
    assert "null_baseline" in group and "templates" in group and "dog_fit" in group
    rows = (out / "clusters.csv").read_text().splitlines()
    assert rows[0].startswith("checkpoint,kind,kernel_size,layer,n_kernels")
    assert any(r.startswith("run1,depthwise,5x5,(all layers),90") for r in rows)
    for png in ("proportions.png", "templates.png", "gamma_hist.png", "clusters_run0_depthwise_5x5.png",
                "samples_run1_depthwise_5x5.png"):
        assert (out / png).stat().st_size > 1000


def test_display_names_are_short_and_unique():
    from dog_jax.analysis.report import unique_names

    assert unique_names(["a/x.pth", "b/x.pth"]) == ["a/x", "b/x"]
    assert unique_names(["a/x.pth", "a/x.pth", "a/y.npz"]) == ["x", "x#2", "y"]
    assert unique_names(["/runs/r1/checkpoints", "/runs/r2/checkpoints"]) == ["r1/checkpoints", "r2/checkpoints"]


def test_display_names_of_bucket_checkpoints_keep_their_url_components():
    """gs:// checkpoints are named from their components (no local resolving of ``gs:/...``)."""
    from dog_jax.analysis.report import unique_names

    assert unique_names(["gs://bucket/run_a/checkpoints/100", "gs://bucket/run_b/checkpoints/100"]) == \
        ["run_a/checkpoints/100", "run_b/checkpoints/100"]
    assert unique_names(["gs://bucket/sweep/init_kernels.npz", "/local/init_kernels.npz"]) == \
        ["sweep/init_kernels", "local/init_kernels"]

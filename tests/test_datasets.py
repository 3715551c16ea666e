"""Image experiments over any TFDS image set (``data.dataset``), MDSM's CIFAR-10 preset, and
Fashion-MNIST/MNIST from IDX files when tensorflow-datasets is absent.

CIFAR-10 and MNIST are never on this machine: ``tfds.testing.mock_data`` stands in for them
(random images of the catalogue's shapes and label ranges; tfds 4.9 mocks ``tfds.data_source``,
which the loader uses, and gives the train and test splits the same records)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import chex
import jax
import numpy as np
import pytest
import tensorflow_datasets as tfds
from conftest import run_main
from test_data import write_fashion_dir

from dsm_jax import config as cfgs
from dsm_jax import data, nets
from experiments import common
from experiments import fashion_mnist as fm
from experiments import fashion_mnist_dde as dde

ROOT = Path(__file__).resolve().parents[1]


# ---------------------------------------------------------------------------------------
# MDSM's CIFAR-10 preset, as their exps/cifar_train.sh and train.py code it
# ---------------------------------------------------------------------------------------
def test_cifar10_preset_is_mdsms_cifar_recipe():
    cfg = cfgs.with_preset(fm.FashionConfig(), fm.PRESETS, "cifar10")
    t, s = cfg.train, cfg.sampler
    assert cfg.data.dataset == "cifar10"
    assert (t.steps, t.batch_size, t.lr, t.final_lr, t.b1, t.b2) == (300_000, 128, 5e-5, 1e-6, 0.9, 0.95)
    assert (t.sigma_min, t.sigma_max, t.sigma_spacing, t.sigma0, t.ema_decay) == (0.05, 1.2, "linear", 0.1, None)
    assert (s.n_constant, s.n_exponential, s.n_linear, s.t_high, s.step_size) == (500, 2000, 200, 100.0, 0.02**2)
    assert (s.init_mean, s.init_std) == (0.5, 1.0)
    assert nets.RESNET_CONFIGS["cifar10"] == dict(width=128, n_stages=3, blocks_per_stage=3)
    m = cfg.model
    assert dict(width=m.width, n_stages=m.n_stages, blocks_per_stage=m.blocks_per_stage) == dict(
        width=128, n_stages=3, blocks_per_stage=3)


def test_cifar10_energy_has_the_parameter_count_of_mdsms_res18_quadratic():
    # Counted from their layer list: 3x3 stem 3 -> 128 (+bias); per block (in, out): 1x1 shortcut
    # (+bias), 3x3 in -> in (no bias), 3x3 in -> out (+bias); three 16384 -> 1 read-outs (+bias).
    blocks = [(128, 256), (256, 256), (256, 256), (256, 512), (512, 512), (512, 512),
              (512, 1024), (1024, 1024), (1024, 1024)]
    expected = 27 * 128 + 128 + sum(i * o + o + 9 * i * i + 9 * i * o + o for i, o in blocks) + 3 * (4 * 4 * 1024 + 1)
    cfg = cfgs.with_preset(fm.FashionConfig(), fm.PRESETS, "cifar10")
    shapes = jax.eval_shape(lambda k: fm._init_state(cfg, fm.energy_module(cfg), k, k).params,
                            jax.random.key(0))
    assert common.n_params(shapes) == expected  # 62,339,075


def test_sigma_spacing_is_checked_and_fingerprinted_only_when_changed():
    base = fm.FashionConfig()
    assert not {"sigma_spacing", "dataset"} & set(cfgs.fingerprint(base))  # old checkpoints resume
    cifar = cfgs.with_preset(base, fm.PRESETS, "cifar10")
    assert cfgs.fingerprint(cifar)["sigma_spacing"] == "linear" and cfgs.fingerprint(cifar)["dataset"] == "cifar10"
    with pytest.raises(ValueError, match=r"`train.sigma_spacing` must be one of \('geometric', 'linear'\)"):
        cfgs.parse_args(base, fm.PRESETS, "", ["--set", "train.sigma_spacing=cubic"])


@pytest.mark.parametrize("config, presets", [(fm.FashionConfig(), fm.PRESETS), (dde.DDEFashionConfig(), dde.PRESETS)],
                         ids=["mdsm", "dde"])
def test_celeb_a_is_refused_with_the_reason(config, presets):
    with pytest.raises(ValueError, match=r"`data.dataset` 'celeb_a' is refused: its 218x178 images need MDSM's "
                                         r"crop-and-resize.*no class labels"):
        cfgs.parse_args(config, presets, "", ["--set", "data.dataset=celeb_a"])


def test_shapes_follow_the_data_set_without_reading_it(tmp_path):
    where = dict(cache_dir=str(tmp_path / "nothing-here"))  # known sets need no data
    assert common.image_shape(common.ImageData(**where)) == (32, 32, 1)
    assert common.image_shape(common.ImageData(dataset="mnist", **where)) == (32, 32, 1)
    assert common.image_shape(common.ImageData(dataset="cifar10", **where)) == (32, 32, 3)
    cfg = cfgs.replace(cfgs.with_preset(dde.DDEFashionConfig(), dde.PRESETS, "smoke"), {"data.dataset": "cifar10"})
    state = jax.eval_shape(lambda: dde.init_state(cfg))
    z = np.zeros((2, cfg.gen.latent_dim), np.float32)
    chex.assert_shape(jax.eval_shape(dde.generator_module(cfg).apply, state.gen.params, z), (2, 32, 32, 3))
    # the FD classifier of each set has its own cache directory
    assert common.classifier_root(common.ImageData(classifier_dir="c")) == "c"
    cifar = common.ImageData(dataset="cifar10", classifier_dir="c")
    assert common.classifier_root(cifar) == os.path.join("c", "cifar10")


def test_mnist_through_mock_data_is_padded_like_fashion(tmp_path):
    with tfds.testing.mock_data(num_examples=6):
        x_train, y_train, x_test, _ = common.load_images(common.ImageData(dataset="mnist", cache_dir=str(tmp_path)))
    chex.assert_shape([x_train, x_test], [(6, 32, 32, 1)] * 2)
    assert np.all(x_train[:, :2] == 0.0) and np.all(x_train[:, :, 30:] == 0.0)  # 2-pixel zero border
    assert np.all((y_train >= 0) & (y_train < 10))


def test_a_missing_catalogue_set_names_the_tfds_build_command(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"'cifar10'.*tfds build cifar10 --file_format=array_record"):
        common.load_images(common.ImageData(dataset="cifar10", cache_dir=str(tmp_path)))


# ---------------------------------------------------------------------------------------
# End to end on mock CIFAR-10: train, sample, inpaint, FD, with 32x32x3 everywhere
# ---------------------------------------------------------------------------------------
TINY = ["data.dataset=cifar10", "data.classifier_steps=2", "data.fd_n=16", "model.width=4", "model.n_stages=1",
        "train.steps=3", "train.steps_per_call=1", "train.checkpoint_every=3", "train.grid_every=none", "sampler.n_constant=1",
        "sampler.n_exponential=2", "sampler.n_linear=1", "sampler.n_samples=16", "sampler.sample_chunk=16",
        "inpaint.n=4", "inpaint.masks=lower_half,centre_square"]


def test_cifar10_end_to_end_on_mock_data(tmp_path):
    out, clf = tmp_path / "run", tmp_path / "classifier"
    argv = ["--preset", "smoke", "--out", str(out), "--no-progress", "--set", f"data.cache_dir={tmp_path / 'tfds'}",
            "--set", f"data.classifier_dir={clf}", *[a for s in TINY for a in ("--set", s)]]
    with tfds.testing.mock_data(num_examples=130):  # the classifier's batch is 128
        metrics, printed = run_main(fm.main, argv)
    assert metrics["dataset"] == "cifar10" and "MDSM PSNR" in printed
    chex.assert_shape(np.load(out / "samples.npz")["samples"], (16, 32, 32, 3))
    assert np.isfinite([metrics["fd"], metrics["fd_floor"], metrics["fd_gaussian_baseline"]]).all()
    assert set(metrics["inpainting_psnr"]) == {"lower_half", "centre_square"}
    assert (out / "inpainting.png").is_file() and (out / "samples.png").is_file()
    assert json.loads((out / "config.json").read_text())["data.dataset"] == "cifar10"
    assert [p.name for p in clf.iterdir()] == ["cifar10"]  # keyed by data set
    cfg, _, params, step = fm.load_run(str(out))  # the run's shape is rebuilt from its config
    assert step == 3 and params["params"]["stem"]["kernel"].shape[2] == 3


# ---------------------------------------------------------------------------------------
# Without tensorflow-datasets: IDX files straight into memory, the same arrays
# ---------------------------------------------------------------------------------------
_NO_TFDS = """
import sys, numpy as np
sys.modules["tensorflow_datasets"] = None  # import tensorflow_datasets now raises ImportError
import dsm_jax, dsm_jax.data as d
from experiments import common
idx, out = sys.argv[1], sys.argv[2]
x, y, xt, yt = common.load_images(common.ImageData(data_dir=idx, test_limit=4))
xm, ym = d.load_arrays("mnist", "test", data_dir=idx)
try:
    d.load_arrays("cifar10", "train")
except ImportError as e:
    message = str(e)
else:
    raise AssertionError("cifar10 loaded without tensorflow-datasets")
try:
    d.load_arrays("mnist", "train")
except FileNotFoundError as e:
    message_mnist = str(e)
# MDSM's CIFAR-10 preset builds its model without data or tfds (synthetic-data runs need this)
import jax
from dsm_jax import config as cfgs
from experiments import fashion_mnist as fm
cfg = cfgs.with_preset(fm.FashionConfig(), fm.PRESETS, "cifar10")
assert jax.eval_shape(lambda: fm.init_fn(cfg)(jax.random.key(0), 2)).shape == (2, 32, 32, 3)
assert "tensorflow_datasets" not in [m for m, v in sys.modules.items() if v is not None]
np.savez(out, x=x, y=y, xt=xt, yt=yt, xm=xm, ym=ym, message=message, message_mnist=message_mnist)
"""


def test_without_tfds_idx_files_load_the_same_arrays_and_catalogue_names_say_why(tmp_path):
    idx = tmp_path / "idx"
    write_fashion_dir(idx, np.random.default_rng(3))
    out = tmp_path / "no_tfds.npz"
    result = subprocess.run([sys.executable, "-c", _NO_TFDS, str(idx), str(out)], capture_output=True, text=True,
                            timeout=300, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert result.returncode == 0, result.stderr[-3000:]
    got = np.load(out)
    where = dict(data_dir=idx, cache_dir=tmp_path / "cache")  # the tfds path: the local builder
    x, y = data.load_arrays("fashion_mnist", "train", **where)
    xt, yt = data.load_arrays("fashion_mnist", "test", limit=4, **where)
    for name, want in dict(x=x, y=y, xt=xt, yt=yt, xm=xt, ym=yt).items():
        if name in ("xm", "ym"):  # mnist read from the same files: the whole test split
            want = data.load_arrays("fashion_mnist", "test", **where)[name == "ym"]
        assert got[name].dtype == want.dtype, name
        np.testing.assert_array_equal(got[name], want, err_msg=name)
    chex.assert_shape(got["x"], (20, 32, 32, 1))
    message = str(got["message"])
    assert "'cifar10'" in message and "needs tensorflow-datasets" in message and "pip install" in message
    assert "MNIST IDX files: no directory given" in str(got["message_mnist"])

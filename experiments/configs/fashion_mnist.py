"""fashion_mnist's config (MDSM on Fashion-MNIST, or any image set with ``data.dataset``): data
and classifier, the ResNet energy, training, the annealed Langevin sampler, inpainting.

Presets: ``default`` (CPU), ``smoke`` (a few steps of everything), ``paper`` (MDSM's
Fashion-MNIST run) and ``cifar10``, **the paper preset for CIFAR-10**: MDSM's
``exps/cifar_train.sh`` as coded (GPU/TPU), see :data:`PRESETS`."""
from __future__ import annotations

import dataclasses

from dsm_jax import config as cfgs
from dsm_jax import core, inpainting, nets
from dsm_jax.config import field, group
from experiments.common import ImageData, check_image_data

OFF = dict(resume=False)  # does not shape a training run: a checkpoint resumes under another value


@dataclasses.dataclass(frozen=True)
class Model:
    # MDSM's Fashion-MNIST net is width 64, 2 blocks per stage (preset "paper").
    width: int = field(16)
    n_stages: int = field(3)
    blocks_per_stage: int = field(1)
    # Convolutions (same parameters either way): XLA's own conv trains fastest outside loops;
    # inside the scanned Langevin chain XLA:CPU's conv gradients fall off a cliff
    # (jax-ml/jax#12868), so the CPU presets sample with dsm_jax.nets.MatmulConv. "canonical"
    # (CanonicalConv) avoids the cliff with XLA's own kernels: with ynn_fusions=false its
    # chain steps are 1.8x faster than MatmulConv's (README, Performance); the default preset
    # keeps the settings its README numbers were measured with.
    train_conv: str = field("xla")
    sample_conv: str = field("matmul", **OFF)


@dataclasses.dataclass(frozen=True)
class Train:
    """MDSM: Adam β = (0.9, 0.95), cosine decay to 1e-6, σ ∈ [0.1, 3] log-spaced (Fashion-MNIST;
    CIFAR-10: σ ∈ [0.05, 1.2] linearly spaced)."""
    steps: int = field(4000)
    batch_size: int = field(64)
    lr: float = field(1e-3)
    final_lr: float = field(1e-6)
    b1: float = field(0.9)
    b2: float = field(0.95)
    sigma_min: float = field(0.1)
    sigma_max: float = field(3.0)
    sigma0: float = field(0.1)
    # How σ is drawn in [sigma_min, sigma_max] (dj.mdsm_loss): uniform in log σ or in σ.
    sigma_spacing: str = field("geometric", added=True)
    ema_decay: float | None = field(0.999, legacy_none=0)  # None: no parameter EMA
    steps_per_call: int = field(1, **OFF)  # > 1 scans steps in one dispatch (GPU/TPU); 1 avoids the CPU conv cliff
    # XLA:CPU's YNNPACK fusions (dsm_jax.compiler_options): off trains this ResNet 14% faster
    # and samples with CanonicalConv 21% faster; only float rounding changes.
    ynn_fusions: bool = field(True, **OFF)
    checkpoint_every: int = field(500, **OFF)
    keep_checkpoints: int = field(3, **OFF)
    grid_every: int | None = field(2000, legacy_none=0, **OFF)  # sample grid PNG (current params) every N steps; None: never
    grid_samples: int = field(16, **OFF)
    skip_nonfinite: bool = field(False, **OFF)  # skip (and count) NaN/inf steps instead of stopping
    # FD monitor: every N seconds of training (its own time excluded) FD and class coverage of data.fd_n
    # samples of the run's chain, same key each time, logged as run "fd_monitor"; None: never
    monitor_every_seconds: float | None = field(None, added=True, **OFF)


@dataclasses.dataclass(frozen=True)
class Sampler:
    """Annealed Langevin (MDSM: 500 at T = 100, 2000 exponential to T = 1, 200 linear to 0; η = 0.02²)."""
    n_constant: int = field(150, **OFF)
    n_exponential: int = field(450, **OFF)
    n_linear: int = field(50, **OFF)
    t_high: float = field(100.0, **OFF)
    step_size: float = field(4e-4, **OFF)
    init_mean: float = field(0.5, **OFF)
    init_std: float = field(1.0, **OFF)
    n_samples: int = field(1000, **OFF)
    sample_chunk: int = field(250, **OFF)


@dataclasses.dataclass(frozen=True)
class Inpaint:
    n: int = field(50, legacy="n_inpaint", **OFF)
    masks: tuple[str, ...] = field(inpainting.MASK_KINDS, legacy="inpaint_masks", **OFF)


@dataclasses.dataclass(frozen=True)
class FashionConfig(cfgs.Legacy):
    seed: int = field(0)
    data: ImageData = group(ImageData)
    model: Model = group(Model)
    train: Train = group(Train)
    sampler: Sampler = group(Sampler)
    inpaint: Inpaint = group(Inpaint)

    def validate(self) -> None:
        cfgs.check_fields(
            self,
            positive_int=("model.width", "model.n_stages", "model.blocks_per_stage", "train.steps", "train.batch_size",
                          "train.steps_per_call", "train.keep_checkpoints", "train.grid_samples", "train.grid_every",
                          "sampler.n_samples", "sampler.sample_chunk", "inpaint.n", "data.classifier_steps",
                          "data.fd_n", "data.train_limit", "data.test_limit"),
            nonnegative_int=("seed", "train.checkpoint_every", "sampler.n_constant", "sampler.n_exponential",
                             "sampler.n_linear"),
            nonnegative=("train.monitor_every_seconds",),
            positive=("train.lr", "train.final_lr", "train.sigma_min", "train.sigma_max", "train.sigma0",
                      "sampler.t_high", "sampler.step_size", "sampler.init_std"),
            open_unit=("train.b1", "train.b2", "train.ema_decay"),
            ordered=(("train.sigma_min", "train.sigma_max"),),
            within_limit=(("train.batch_size", "data.train_limit"),),
            choices={"model.train_conv": nets.CONV_IMPLS, "model.sample_conv": nets.CONV_IMPLS,
                     "train.sigma_spacing": core.SPACINGS},
            subsets={"inpaint.masks": inpainting.MASK_KINDS},
        )
        cfgs.check_t_high(self, "sampler.t_high")
        check_image_data(self.data)
        s = self.sampler
        if s.n_constant + s.n_exponential + s.n_linear < 1:
            raise ValueError("The annealed Langevin chain has no steps: set one of sampler.n_constant, "
                             "sampler.n_exponential, sampler.n_linear > 0 (e.g. --set sampler.n_exponential=450).")


PRESETS = {
    "default": {},
    "smoke": dict(
        data=ImageData(train_limit=2000, classifier_steps=60, fd_n=64), model=Model(width=8, sample_conv="canonical"),
        train=Train(steps=30, batch_size=16, checkpoint_every=10, grid_every=20, ynn_fusions=False),
        sampler=Sampler(n_constant=5, n_exponential=10, n_linear=5, n_samples=64, sample_chunk=32),
        inpaint=Inpaint(n=8),
    ),
    "paper": dict(
        data=ImageData(fd_n=10_000),
        model=Model(width=64, blocks_per_stage=2, train_conv="xla", sample_conv="xla"),
        train=Train(steps=100_000, batch_size=128, lr=1e-4, steps_per_call=500, ynn_fusions=False,
                    checkpoint_every=5000, grid_every=5000, grid_samples=36),
        sampler=Sampler(n_constant=500, n_exponential=2000, n_linear=200, n_samples=10_000, sample_chunk=1000),
        inpaint=Inpaint(n=1000),
    ),
    # The paper preset for CIFAR-10, MDSM's exps/cifar_train.sh as coded: the 9-block ResNet
    # (nets.RESNET_CONFIGS["cifar10"]: 128-channel stem, 256/512/1024, ELU), lr 5e-5, 300k steps of
    # batch 128, σ ∈ [0.05, 1.2] linear, Adam (0.9, 0.95) with cosine decay to 1e-6, no EMA, 32×32×3
    # images unpadded and unflipped, and the same 2,700-step chain. Needs a GPU/TPU and the prepared
    # TFDS cifar10 (`tfds build cifar10 --file_format=array_record`).
    "cifar10": dict(
        data=ImageData(dataset="cifar10", fd_n=10_000),
        model=Model(**nets.RESNET_CONFIGS["cifar10"], train_conv="xla", sample_conv="xla"),
        train=Train(steps=300_000, batch_size=128, lr=5e-5, sigma_min=0.05, sigma_max=1.2, sigma_spacing="linear",
                    ema_decay=None, steps_per_call=500, ynn_fusions=False, checkpoint_every=5000, grid_every=5000,
                    grid_samples=36),
        sampler=Sampler(n_constant=500, n_exponential=2000, n_linear=200, n_samples=10_000, sample_chunk=1000),
        inpaint=Inpaint(n=1000),
    ),
}

"""fashion_mnist's config (MDSM on Fashion-MNIST, or any image set with ``data.dataset``): data
and classifier, the energy (MDSM's ResNet, or the DDE paper's DenseNet MLP), training, the
annealed Langevin sampler, inpainting.

Presets: ``default`` (CPU: the DenseNet MLP energy, chosen by the budget study), ``smoke`` (the ResNet) (a few steps of everything), ``paper`` (MDSM's
Fashion-MNIST run as their code has it: no EMA) and ``cifar10``, **the paper preset for
CIFAR-10**: MDSM's ``exps/cifar_train.sh`` as coded (GPU/TPU), see :data:`PRESETS`."""
from __future__ import annotations

import dataclasses

from dsm_jax import config as cfgs
from dsm_jax import core, inpainting, nets, validation
from dsm_jax.config import field, group
from experiments.common import ImageData, check_image_data

OFF = dict(resume=False)  # does not shape a training run: a checkpoint resumes under another value


KINDS = ("resnet", "densenet")
# Training steps per dispatch (fit's lax.scan; CanonicalConv keeps the scanned convolutions
# fast). Default preset, CanonicalConv, ynn off, 2 cores shared with other jobs (load 2-10),
# 100-150 steps per try after compile, tries interleaved, steps/s: 50 steps/call 1.2 1.1 2.1 2.2
# 2.1 3.7 5.0 5.6 against 1.0 0.8 1.7 1.9 1.7 2.5 2.7 4.2 with 1 (1.2-1.9x, every pair); 10 steps
# /call 1.0 1.0 2.8 2.5 3.1 5.9 (50 was faster in 4 of its 6 pairs with 10). checkpoint_every and
# grid_every must be multiples of it (validate says so).
STEPS_PER_CALL = 50


@dataclasses.dataclass(frozen=True)
class Model:
    # The energy: "resnet" (MDSM's ResNetEnergy) or "densenet" (the DDE paper's DenseNet MLP,
    # nets.DenseNetEnergy, under MDSM's multi-scale loss). 16 x 64 at batch 64 on 2 shared cores
    # (load ~5), 50 steps/call: 56 steps/s against the default ResNet's 3.7 in a separate try (ynn off; with
    # --set train.ynn_fusions=true the MLP measured 1.05x and 1.7x faster in two tries).
    kind: str = field("resnet", added=True)
    # resnet: MDSM's Fashion-MNIST net is width 64, 2 blocks per stage (preset "paper").
    width: int = field(16)
    n_stages: int = field(3)
    blocks_per_stage: int = field(1)
    # resnet: one convolution for training and sampling (nets.CONV_IMPLS, same parameters
    # whichever). "canonical" (CanonicalConv) runs XLA:CPU's fast kernels inside the scanned
    # chain too, where nn.Conv's gradients fall off a cliff (jax-ml/jax#12868); "xla" (nn.Conv)
    # on GPU/TPU; "matmul" (MatmulConv) for experiments. Before it a run had two, training's and
    # sampling's: runs written with train_conv / sample_conv load with their sample_conv, and as
    # train_conv was "xla" in every preset, fingerprints keep train_conv: "xla" so their checkpoints
    # resume (the conv shapes no parameter, so it is not fingerprinted itself).
    conv: str = field("canonical", replaces=("train_conv", "sample_conv"), fingerprint_constants={"train_conv": "xla"},
                      **OFF)
    # densenet: depth × growth dense layers; quadratic adds a learned diagonal Gaussian term
    # (a softplus MLP's gradient is bounded: see nets.DenseNetEnergy).
    depth: int = field(16, added=True)
    growth: int = field(64, added=True)
    quadratic: bool = field(True, added=True)


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
    ema_decay: float | None = field(0.999, legacy_none=0)  # None: no parameter EMA (MDSM's code has none)
    steps_per_call: int = field(STEPS_PER_CALL, **OFF)  # training steps scanned in one dispatch (see above)
    # XLA:CPU's YNNPACK fusions (dsm_jax.compiler_options): off trains this ResNet 14% faster
    # and samples with CanonicalConv 21% faster (docs/performance.md); only float rounding changes.
    ynn_fusions: bool = field(False, **OFF)
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
            positive_int=("model.width", "model.n_stages", "model.blocks_per_stage", "model.depth", "model.growth",
                          "train.steps", "train.batch_size",
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
            choices={"model.kind": KINDS, "model.conv": nets.CONV_IMPLS, "train.sigma_spacing": core.SPACINGS},
            subsets={"inpaint.masks": inpainting.MASK_KINDS},
        )
        cfgs.check_t_high(self, "sampler.t_high")
        check_image_data(self.data)
        for name in ("train.checkpoint_every", "train.grid_every"):  # fit's chunks end there: refused before any compute
            if cfgs.get(self, name):
                validation.check_multiple_of(name, cfgs.get(self, name), "train.steps_per_call", self.train.steps_per_call)
        s = self.sampler
        if s.n_constant + s.n_exponential + s.n_linear < 1:
            raise ValueError("The annealed Langevin chain has no steps: set one of sampler.n_constant, "
                             "sampler.n_exponential, sampler.n_linear > 0 (e.g. --set sampler.n_exponential=450).")


PRESETS = {
    # Chosen by the budget study (experiments.fashion_mnist_study, docs/results.md): MDSM's loss on the DDE
    # paper's DenseNet MLP energy (16 x 64, learned Gaussian term), 40k steps of batch 64 with YNNPACK on
    # (the MLP prefers it), reached a lower FD at every training minute than the CPU-sized ResNet, and
    # samples ~12x faster. The dataclass defaults stay the ResNet: runs written before load as what they were.
    # Its chain's step size was chosen afterwards on the trained energy by experiments.fashion_mnist_chains
    # (FD against training images; η = 1.6e-3 = 4x MDSM's 0.02²: FD 120.5 against 181.2 at MDSM's value).
    "default": dict(model=Model(kind="densenet"), train=Train(steps=40_000, ynn_fusions=True),
                    sampler=Sampler(step_size=1.6e-3)),
    "smoke": dict(
        data=ImageData(train_limit=2000, classifier_steps=60, fd_n=64), model=Model(width=8),
        train=Train(steps=30, batch_size=16, steps_per_call=10, checkpoint_every=10, grid_every=20),
        sampler=Sampler(n_constant=5, n_exponential=10, n_linear=5, n_samples=64, sample_chunk=32),
        inpaint=Inpaint(n=8),
    ),
    # MDSM's Fashion-MNIST run as their code has it: the width-64 ResNet with 2 blocks per stage,
    # 100k steps of batch 128, lr 1e-4, no EMA (their training loop keeps none), nn.Conv (GPU/TPU),
    # and the 2,700-step chain (500 at T = 100, 2,000 exponential, 200 linear).
    "paper": dict(
        data=ImageData(fd_n=10_000),
        model=Model(width=64, blocks_per_stage=2, conv="xla"),
        train=Train(steps=100_000, batch_size=128, lr=1e-4, ema_decay=None, steps_per_call=500,
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
        model=Model(**nets.RESNET_CONFIGS["cifar10"], conv="xla"),
        train=Train(steps=300_000, batch_size=128, lr=5e-5, sigma_min=0.05, sigma_max=1.2, sigma_spacing="linear",
                    ema_decay=None, steps_per_call=500, checkpoint_every=5000, grid_every=5000,
                    grid_samples=36),
        sampler=Sampler(n_constant=500, n_exponential=2000, n_linear=200, n_samples=10_000, sample_chunk=1000),
        inpaint=Inpaint(n=1000),
    ),
}


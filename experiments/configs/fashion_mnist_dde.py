"""fashion_mnist_dde's config (DDE on Fashion-MNIST): data and classifier, the energies E_p /
E_q, the generator, training, the generator monitor, and the DDE-density sampler."""
from __future__ import annotations

import dataclasses

from dsm_jax import config as cfgs
from dsm_jax import nets
from dsm_jax.config import field, group
from experiments.common import ImageData, check_image_data

ARCHS = ("densenet", "conv")
OFF = dict(resume=False)  # does not shape a training run: a checkpoint resumes under another value


@dataclasses.dataclass(frozen=True)
class Model:
    """The energies E_p and E_q. "densenet": the DDE paper's DenseNet MLPs (16 layers, growth 256
    for E and 64 for G, 16-d latent, softplus; preset "paper"). The CPU preset keeps depth 16 and
    the generator, with growth 64 for the energies (1.5M instead of 12M parameters, ~10x faster).
    "conv": ResNetEnergy (MDSM's energy) and a DCGAN-like ConvGenerator."""
    arch: str = field("densenet")
    depth: int = field(16)
    growth: int = field(64)
    # A learned diagonal Gaussian term in the energies (DenseNetEnergy(quadratic=True); not in
    # the paper): without it a softplus MLP's DSM loss plateaus far above the mean-image level.
    quadratic: bool = field(True)
    activation: str = field("softplus")
    conv_width: int = field(16)   # arch "conv": ResNetEnergy width / stages / blocks per stage
    conv_stages: int = field(3)
    conv_blocks: int = field(1)
    conv_impl: str = field("matmul")  # MatmulConv: no XLA:CPU slowdown inside scanned chunks
    # The networks' image side: None trains on the data's padded size (32); 28 on the centre crop,
    # the authors' unpadded Fashion-MNIST. Samples are zero-padded back for the FD classifier.
    image_size: int | None = field(None, added=True)


@dataclasses.dataclass(frozen=True)
class Generator:
    depth: int = field(16)
    growth: int = field(64)
    latent_dim: int = field(16, legacy="latent_dim")
    init_scale: float = field(3.0)  # DenseNetGenerator(readout_init_scale=...): > 1 starts G more diverse
    conv_width: int = field(32)     # arch "conv": ConvGenerator channels at full resolution
    lr: float = field(1e-3)
    b1: float = field(0.9)
    b2: float = field(0.999)
    every: int = field(10)          # one G step every N iterations


@dataclasses.dataclass(frozen=True)
class Train:
    """DDE: batch 100, Adam 1e-3 for all three networks, σ = 0.5, G every 10 steps; the DDE
    code's lockstep recipe (E_p and E_q from random weights, one DSM step each per iteration,
    no warm-ups). The warm-ups are kept as options: E_p alone on real batches first, then E_q
    alone on the initial generator's samples."""
    steps: int = field(25_000)      # ≈ 11.6 steps/s on 2 CPU cores: ~36 min
    batch_size: int = field(100)
    lr: float = field(1e-3)
    b1: float = field(0.9)
    b2: float = field(0.999)
    sigma: float = field(0.5, legacy="sigma")
    sigma_start: float = field(0.5, legacy="sigma_start")  # > sigma: σ anneals geometrically over anneal_frac·steps
    anneal_frac: float = field(0.5, legacy="anneal_frac")
    p_warmup_steps: int = field(0)
    q_warmup_steps: int = field(0)
    steps_per_call: int = field(50, **OFF)  # MLPs have no CPU scan cliff; arch "conv" with conv_impl "xla": use 1
    # XLA:CPU's YNNPACK fusions (dsm_jax.compiler_options): on for the DenseNet (its
    # 1808 x 64 layers run 1.5x slower without them); arch "conv" runs faster with false.
    ynn_fusions: bool = field(True, **OFF)
    checkpoint_every: int = field(2500, **OFF)
    keep_checkpoints: int = field(3, **OFF)
    grid_every: int | None = field(2500, legacy_none=0, **OFF)  # generator sample grid PNG every N steps; None: never
    skip_nonfinite: bool = field(False, **OFF)  # skip (and count) NaN/inf steps instead of stopping


@dataclasses.dataclass(frozen=True)
class Monitor:
    """FD (against the test set's features) and class coverage of ``n`` samples of fixed
    latents every ``every`` steps (None: never), and every ``every_seconds`` of training (its own
    time excluded; None: never, the default), logged as run "generator_monitor"."""
    every: int | None = field(2500, legacy_none=0, **OFF)
    every_seconds: float | None = field(None, added=True, **OFF)
    n: int = field(1000, **OFF)


@dataclasses.dataclass(frozen=True)
class Density:
    """The DDE-density variant: E_p sampled by Langevin (T from t_high down to 1), then one
    Tweedie denoise at σ."""
    enabled: bool = field(True, legacy="density", **OFF)
    step_size: float = field(0.02, **OFF)
    n_constant: int = field(50, **OFF)
    n_exponential: int = field(250, **OFF)
    n_final: int = field(200, **OFF)   # steps at T = 1 (sampling p̂_σ itself)
    t_high: float = field(10.0, **OFF)
    init_mean: float = field(0.5, **OFF)
    init_std: float = field(0.5, **OFF)
    n_samples: int = field(1000, **OFF)
    chunk: int = field(250, **OFF)


@dataclasses.dataclass(frozen=True)
class DDEFashionConfig(cfgs.Legacy):
    seed: int = field(0)
    data: ImageData = group(ImageData)
    model: Model = group(Model)
    gen: Generator = group(Generator, "gen_")
    train: Train = group(Train)
    monitor: Monitor = group(Monitor, "monitor_")
    n_samples: int = field(1000, **OFF)  # generator samples scored
    density: Density = group(Density, "density_")
    # The MDSM run to compare with in the printed table (read only; skipped if absent or if its
    # FD used another classifier or n).
    mdsm_metrics: str = field("runs/fashion_mnist-default/metrics.json", **OFF)

    def validate(self) -> None:
        cfgs.check_fields(
            self,
            positive_int=("model.depth", "model.growth", "gen.depth", "gen.growth", "gen.latent_dim",
                          "model.conv_width", "model.conv_stages", "model.conv_blocks", "gen.conv_width",
                          "train.steps", "train.batch_size", "gen.every", "train.steps_per_call",
                          "train.keep_checkpoints", "n_samples", "data.fd_n", "data.classifier_steps",
                          "density.n_samples", "density.chunk", "monitor.n", "monitor.every", "train.grid_every",
                          "data.train_limit", "data.test_limit", "model.image_size"),
            nonnegative_int=("seed", "train.p_warmup_steps", "train.q_warmup_steps", "train.checkpoint_every",
                             "density.n_constant", "density.n_exponential", "density.n_final"),
            nonnegative=("monitor.every_seconds",),
            positive=("gen.init_scale", "train.lr", "gen.lr", "train.sigma", "train.sigma_start",
                      "density.step_size", "density.t_high", "density.init_std"),
            open_unit=("train.b1", "train.b2", "gen.b1", "gen.b2"),
            unit_interval=("train.anneal_frac",),
            within_limit=(("train.batch_size", "data.train_limit"),),
            choices={"model.arch": ARCHS, "model.conv_impl": nets.CONV_IMPLS,
                     "model.activation": tuple(sorted(nets.ACTIVATIONS))},
        )
        cfgs.check_t_high(self, "density.t_high")
        check_image_data(self.data)
        if self.model.image_size is not None and self.model.arch != "densenet":
            raise ValueError(f"`model.image_size` {self.model.image_size} needs `model.arch` 'densenet' (the conv "
                             "networks keep the data's size); drop model.image_size or use model.arch=densenet.")


PRESETS = {
    "default": {},
    "smoke": dict(
        data=ImageData(train_limit=2000, test_limit=1000, classifier_steps=60, fd_n=64),
        model=Model(depth=3, growth=16), gen=Generator(depth=3, growth=16, every=5),
        train=Train(steps=40, batch_size=16, steps_per_call=10, checkpoint_every=20, grid_every=20, ynn_fusions=False),
        monitor=Monitor(every=20, n=64), n_samples=64,
        density=Density(n_constant=5, n_exponential=10, n_final=5, n_samples=64, chunk=32),
    ),
    "paper": dict(
        data=ImageData(fd_n=10_000),
        model=Model(depth=16, growth=nets.DDE_DENSENET_PAPER["energy_growth"], quadratic=False),
        gen=Generator(depth=16, growth=nets.DDE_DENSENET_PAPER["generator_growth"],
                      latent_dim=nets.DDE_DENSENET_PAPER["latent_dim"], init_scale=1.0, lr=1e-3),
        train=Train(steps=30_000, batch_size=100, lr=1e-3, p_warmup_steps=0, q_warmup_steps=0,  # 50 epochs
                    steps_per_call=500, checkpoint_every=5000, grid_every=5000),
        n_samples=10_000,
        density=Density(n_constant=200, n_exponential=1000, n_final=800, n_samples=10_000, chunk=1000),
    ),
}

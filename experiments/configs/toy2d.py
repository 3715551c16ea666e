"""toy2d's config: one group per job (networks, training, each method, the sampler, the
evaluation). Presets replace whole groups; ``--set gen.iters=...`` one field."""
from __future__ import annotations

import dataclasses

from dsm_jax import config as cfgs
from dsm_jax import nets, toy as toys
from dsm_jax.config import field, group

METHODS = ("dde", "dde-generator", "mdsm")
OFF = dict(resume=False)  # does not shape a training run: a checkpoint resumes under another value


@dataclasses.dataclass(frozen=True)
class Model:
    # The DDE paper's toy MLP is 25 x 32 softplus (preset "paper"); on 2 CPU cores a shallow,
    # wide MLP reaches far lower KL in the same minutes (4000 steps of 25 x 32 gave a density
    # KL of 0.22 on eight_gaussians, 3000 steps of 4 x 128 gave 0.003).
    depth: int = field(4)
    width: int = field(128)
    activation: str = field("softplus")
    weight_init: str = field("lecun")  # every network's dense init (nets.DENSE_INITS); "xavier": DDE's code


@dataclasses.dataclass(frozen=True)
class Train:
    batch_size: int = field(1024)
    lr: float = field(1e-3)
    final_lr: float = field(1e-5)
    steps_per_call: int = field(200, **OFF)
    # XLA:CPU's YNNPACK fusions (dsm_jax.compiler_options): no effect on 4 x 128 MLPs; off makes
    # the 25 x 32 MLP's DSM step 1.5x faster (preset "paper"). Only float rounding changes.
    ynn_fusions: bool = field(True, **OFF)
    # every run checkpoints under <out>/checkpoints/<toy>/<method> and resumes; skip_nonfinite
    # skips (and counts) steps with a NaN/inf loss or update instead of stopping.
    checkpoint_every: int = field(1000, **OFF)
    keep_checkpoints: int = field(2, **OFF)
    skip_nonfinite: bool = field(False, **OFF)


@dataclasses.dataclass(frozen=True)
class DDE:
    steps: int = field(3000)  # the density E by dsm_loss at σ


@dataclasses.dataclass(frozen=True)
class Generator:
    """The DDE code's lockstep recipe: E_p and E_q from random weights, one DSM step each per
    iteration with the same Adam; G = z + MLP(z) a step every ``every``; σ fixed. Trained alike,
    the two energies' errors cancel in G's gradient (README: the study table of each deviation)."""
    depth: int = field(4)
    width: int = field(128)
    activation: str = field("relu")
    activation_by_toy: tuple[str, ...] = field(())  # "toy:activation" exceptions, e.g. checkerboard:softplus
    iters: int = field(16000)
    every: int = field(10)
    lr: float = field(1e-3)
    b1: float = field(0.9)
    batch_size: int = field(1024)
    q_init: str = field("scratch")  # "scratch": E_q from its own random weights; "copy_p": E_q starts as E_p
    # Cosine decay of all three learning rates to train.final_lr (E_p and E_q on the same
    # schedule, G over its updates): not in the DDE code, whose constant rate leaves G
    # jittering at the end (checkerboard: 0.039 constant vs 0.022 decayed after 12,000 iterations).
    lr_decay: bool = field(True)
    # Deviations from the recipe, kept as options (each costs sample KL; see the study table):
    p_pretrained: bool = field(False)  # E_p starts from the `dde` run's trained density (needs method dde)
    q_warmup_steps: int = field(0, legacy="q_warmup_steps")  # E_q alone on the initial G's samples first
    anneal_sigma: bool = field(False)  # σ decays from sigma_start to sigma over anneal_frac of the run
    sigma_start: float = field(1.0)
    anneal_frac: float = field(0.5)
    # sample KL of G on monitor_samples fixed latents every monitor_every iterations (None:
    # never), logged as run "<toy>/dde-generator/monitor" and plotted in <toy>_loss.png
    monitor_every: int | None = field(2000, legacy_none=0, **OFF)
    monitor_samples: int = field(2000, **OFF)


@dataclasses.dataclass(frozen=True)
class MDSM:
    steps: int = field(3000)
    sigma_min: float = field(0.05, legacy="sigma_min")
    sigma_max: float = field(1.0, legacy="sigma_max")
    sigma0: float = field(0.1, legacy="sigma0")


@dataclasses.dataclass(frozen=True)
class Sampler:
    """MDSM's annealed Langevin: n_constant steps at t_high, n_exponential decaying to T = 1,
    n_linear from 1 to 0; chains start at init_scale · N(0, I)."""
    step_size: float = field(1e-3, legacy="sampler_step_size", **OFF)
    n_constant: int = field(200, **OFF)
    n_exponential: int = field(1000, **OFF)
    n_linear: int = field(0, **OFF)
    t_high: float = field(10.0, **OFF)
    init_scale: float = field(3.0, **OFF)


@dataclasses.dataclass(frozen=True)
class Eval:
    n_samples: int = field(10000, **OFF)
    n_eval: int = field(20000, **OFF)
    grid_n: int = field(200, **OFF)
    ais_chains: int = field(1024, **OFF)
    ais_temps: int = field(256, **OFF)


@dataclasses.dataclass(frozen=True)
class ToyConfig(cfgs.Legacy):
    toys: tuple[str, ...] = field(toys.TOY_NAMES, **OFF)
    methods: tuple[str, ...] = field(METHODS, **OFF)
    seed: int = field(0)
    sigma: float = field(0.2)
    model: Model = group(Model)
    train: Train = group(Train)
    dde: DDE = group(DDE, "dde_")
    gen: Generator = group(Generator, "gen_")
    mdsm: MDSM = group(MDSM, "mdsm_")
    sampler: Sampler = group(Sampler)
    eval: Eval = group(Eval)

    def validate(self) -> None:
        cfgs.check_fields(
            self,
            positive_int=("model.depth", "model.width", "gen.depth", "gen.width", "train.batch_size",
                          "gen.batch_size", "train.steps_per_call", "dde.steps", "gen.iters", "gen.every",
                          "mdsm.steps", "eval.n_samples", "eval.n_eval", "eval.grid_n", "eval.ais_chains",
                          "eval.ais_temps", "train.keep_checkpoints", "gen.monitor_samples", "gen.monitor_every"),
            nonnegative_int=("seed", "gen.q_warmup_steps", "sampler.n_constant", "sampler.n_exponential",
                             "sampler.n_linear", "train.checkpoint_every"),
            positive=("sigma", "train.lr", "train.final_lr", "gen.lr", "gen.sigma_start", "mdsm.sigma_min",
                      "mdsm.sigma_max", "mdsm.sigma0", "sampler.step_size", "sampler.t_high", "sampler.init_scale"),
            unit_interval=("gen.anneal_frac",),
            open_unit=("gen.b1",),
            ordered=(("mdsm.sigma_min", "mdsm.sigma_max"),),
            choices={"model.activation": sorted(nets.ACTIVATIONS), "gen.activation": sorted(nets.ACTIVATIONS),
                     "gen.q_init": ("scratch", "copy_p"), "model.weight_init": sorted(nets.DENSE_INITS)},
            subsets={"toys": toys.TOY_NAMES, "methods": METHODS},
        )
        cfgs.check_t_high(self, "sampler.t_high")
        for item in self.gen.activation_by_toy:
            toy_name, _, act = item.partition(":")
            if toy_name not in toys.TOY_NAMES or act not in nets.ACTIVATIONS:
                raise ValueError(f"config field `gen.activation_by_toy` entry {item!r} must be TOY:ACTIVATION with "
                                 f"TOY in {toys.TOY_NAMES} and ACTIVATION in {sorted(nets.ACTIVATIONS)}; fix it "
                                 f"with --set gen.activation_by_toy=checkerboard:softplus.")
        if self.gen.p_pretrained and "dde" not in self.methods:
            raise ValueError("config field `gen.p_pretrained` needs the `dde` method to pre-train E_p: add it "
                             "(--set methods=dde,dde-generator) or --set gen.p_pretrained=false.")
        s = self.sampler
        if s.n_constant + s.n_exponential + s.n_linear < 1:
            raise ValueError("The MDSM sampler has no steps: set one of sampler.n_constant, sampler.n_exponential, "
                             "sampler.n_linear > 0 (e.g. --set sampler.n_exponential=1000).")


_smoke_gen = dict(depth=3, width=32, batch_size=256, iters=200, monitor_every=100, monitor_samples=500)
PRESETS = {
    "default": {},
    "smoke": dict(
        model=Model(depth=3, width=32), gen=Generator(**_smoke_gen),
        train=Train(batch_size=256, steps_per_call=50, checkpoint_every=100, ynn_fusions=False),
        dde=DDE(steps=200), mdsm=MDSM(steps=200), sampler=Sampler(n_constant=20, n_exponential=80),
        eval=Eval(n_samples=1000, n_eval=2000, grid_n=64, ais_chains=128, ais_temps=32),
    ),
    # The DDE code's toy recipe as coded (logchan/dde, dde.py defaults): 25 x 32 networks with
    # Xavier init, batch 2048, Adam 1e-3 for all three, G every 10, ReLU generator but softplus on
    # the checkerboard, 200 epochs of 25 batches = 5,000 iterations (their released checkpoints
    # trained longer: 5,000 reached a sample KL of 0.48 here).
    "paper": dict(
        model=Model(depth=25, width=32, weight_init="xavier"),
        train=Train(batch_size=2048, steps_per_call=1000, ynn_fusions=False, checkpoint_every=10_000),
        gen=Generator(depth=25, width=32, batch_size=2048, every=10, iters=5000, lr_decay=False, activation="relu",
                      activation_by_toy=("checkerboard:softplus",)),
        dde=DDE(steps=100_000), mdsm=MDSM(steps=100_000), sampler=Sampler(n_constant=500, n_exponential=2000),
        eval=Eval(n_samples=20000, n_eval=100000, grid_n=300),
    ),
}

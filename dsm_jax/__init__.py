"""dsm_jax: generative models built from denoising autoencoders, in JAX.

Convention: ``energy_fn(params, x) -> E`` of shape ``(batch,)``; density ∝ exp(−E).
See :mod:`dsm_jax.core` for how the DDE and MDSM papers' signs map onto it.
"""
from dsm_jax.core import (
    denoiser,
    dsm_loss,
    energy_and_grad,
    kl_generator_loss,
    mdsm_loss,
    sample_sigmas,
    score,
)
from dsm_jax.dde import (
    DDEState,
    geometric_sigma_schedule,
    init_dde_state,
    make_dde_step,
    make_p_warmup_step,
    make_q_warmup_step,
)
from dsm_jax.likelihood import (
    ais_log_z,
    estimate_log_z,
    estimate_log_z_with_info,
    evaluate_log_likelihood,
    gaussian_proposal_log_density,
    grid_log_z,
    is_log_z,
    log_likelihood,
    make_ais_log_z,
    make_is_log_z,
    sigmoid_schedule,
)
from dsm_jax.nets import RESNET_CONFIGS, MLPEnergy, ResidualMLPGenerator, ResNetEnergy, energy_fn_of, init_params
from dsm_jax.nets import DDE_DENSENET_PAPER, ConvGenerator, DenseNetEnergy, DenseNetGenerator, DenseNetMLP
from dsm_jax.adaptation import AdaptationInfo, mala_step_size_adaptation
from dsm_jax.diagnostics import effective_sample_size, potential_scale_reduction
from dsm_jax.interop import to_logdensity
from dsm_jax.samplers import (
    ChainState,
    StepInfo,
    annealed_langevin,
    annealed_langevin_with_info,
    gaussian_start,
    init_chain,
    inpainter,
    langevin,
    langevin_kernel,
    langevin_with_info,
    mala,
    mala_kernel,
    mala_with_info,
    mdsm_temperature_schedule,
    preconditioned_mala_kernel,
    sample_in_chunks,
)
from dsm_jax.checkpoint import Checkpoints, IncompatibleCheckpointError, latest_step
from dsm_jax.loop import Every, fit
from dsm_jax.runlog import append_record, read_log
from dsm_jax.train_step import (
    TrainState,
    adam,
    init_train_state,
    make_train_step,
    skip_nonfinite_steps,
    update_ema,
)
from dsm_jax.xla import compiler_options

__version__ = "0.1.0"

__all__ = [
    "AdaptationInfo",
    "ChainState",
    "Checkpoints",
    "IncompatibleCheckpointError",
    "ConvGenerator",
    "DDEState",
    "DDE_DENSENET_PAPER",
    "DenseNetEnergy",
    "DenseNetGenerator",
    "DenseNetMLP",
    "MLPEnergy",
    "RESNET_CONFIGS",
    "ResNetEnergy",
    "ResidualMLPGenerator",
    "StepInfo",
    "TrainState",
    "adam",
    "ais_log_z",
    "annealed_langevin",
    "annealed_langevin_with_info",
    "compiler_options",
    "denoiser",
    "dsm_loss",
    "effective_sample_size",
    "energy_and_grad",
    "energy_fn_of",
    "estimate_log_z",
    "estimate_log_z_with_info",
    "evaluate_log_likelihood",
    "fit",
    "gaussian_proposal_log_density",
    "geometric_sigma_schedule",
    "grid_log_z",
    "init_chain",
    "init_dde_state",
    "init_params",
    "init_train_state",
    "inpainter",
    "is_log_z",
    "kl_generator_loss",
    "langevin",
    "langevin_kernel",
    "langevin_with_info",
    "log_likelihood",
    "make_ais_log_z",
    "make_is_log_z",
    "make_dde_step",
    "make_p_warmup_step",
    "make_q_warmup_step",
    "make_train_step",
    "mala",
    "mala_kernel",
    "mala_step_size_adaptation",
    "mala_with_info",
    "mdsm_loss",
    "mdsm_temperature_schedule",
    "potential_scale_reduction",
    "preconditioned_mala_kernel",
    "gaussian_start",
    "sample_in_chunks",
    "sample_sigmas",
    "score",
    "sigmoid_schedule",
    "skip_nonfinite_steps",
    "to_logdensity",
    "update_ema",
    "Every",
    "append_record",
    "latest_step",
    "read_log",
]

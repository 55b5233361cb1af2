"""Losses: time samplers, the rectified-flow loss, distances, the post-training (Stage 1B and few-step) objectives."""

from .flow import FlowLoss, RectifiedFlowLoss, VelocityFn, cfg_dropout
from .perceptual import L1Distance, MSEDistance, PerceptualDistance, build_distance
from .posttrain import ModeSeeking, PosttrainObjective, few_step_sampler, random_chain_times
from .distillation import Distillation, window_bounds  # after posttrain: it subclasses its interface
from .time_samplers import FatLogitNormalTime, LogitNormalTime, TimeSampler, UniformTime, shift_time

__all__ = [
    "FlowLoss", "PerceptualDistance", "PosttrainObjective",
    "RectifiedFlowLoss", "VelocityFn", "cfg_dropout", "MSEDistance", "L1Distance", "build_distance",
    "ModeSeeking", "Distillation", "random_chain_times", "few_step_sampler", "window_bounds", "TimeSampler", "UniformTime", "LogitNormalTime",
    "FatLogitNormalTime", "shift_time",
]

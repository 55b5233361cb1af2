"""Losses: time samplers, the rectified-flow loss, distances, the Stage 1B objective."""

from .flow import FlowLoss, RectifiedFlowLoss, VelocityFn, cfg_dropout
from .perceptual import L1Distance, MSEDistance, PerceptualDistance, build_distance
from .posttrain import ModeSeeking, PosttrainObjective, random_chain_times
from .time_samplers import FatLogitNormalTime, LogitNormalTime, TimeSampler, UniformTime, shift_time

__all__ = [
    "FlowLoss", "PerceptualDistance", "PosttrainObjective",
    "RectifiedFlowLoss", "VelocityFn", "cfg_dropout", "MSEDistance", "L1Distance", "build_distance",
    "ModeSeeking", "random_chain_times", "TimeSampler", "UniformTime", "LogitNormalTime",
    "FatLogitNormalTime", "shift_time",
]

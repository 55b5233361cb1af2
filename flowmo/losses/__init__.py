"""Losses: time samplers, the rectified-flow loss, distances, the Stage 1B objective."""

from .flow import RectifiedFlowLoss, VelocityFn, cfg_dropout
from .perceptual import L1Distance, MSEDistance, build_distance
from .posttrain import ModeSeeking, random_chain_times
from .time_samplers import FatLogitNormalTime, LogitNormalTime, TimeSampler, UniformTime, shift_time

__all__ = [
    "RectifiedFlowLoss", "VelocityFn", "cfg_dropout", "MSEDistance", "L1Distance", "build_distance",
    "ModeSeeking", "random_chain_times", "TimeSampler", "UniformTime", "LogitNormalTime",
    "FatLogitNormalTime", "shift_time",
]

"""The registry of each built-in component kind: its interface, its spec base and its wiring.

The kinds' classes are named as ``"package.module:Name"`` and imported on first use: the
registries sit below everything else, which imports them to register its components.
"""

from __future__ import annotations

from .core import Registry

BACKBONES: Registry = Registry("backbone", interface="flowmo.blocks.base:Backbone",
                               spec_base="flowmo.spec:BackboneSpec", wiring=("patch_dim", "txt_in_dim", "txt_out_dim"))
QUANTIZERS: Registry = Registry("quantizer", interface="flowmo.quantizers.base:Quantizer",
                                check="flowmo.quantizers.base:check_constructed",
                                spec_base="flowmo.spec:QuantizerSpec", wiring=("channels",))
TIME_SAMPLERS: Registry = Registry("time sampler", interface="flowmo.losses.time_samplers:TimeSampler",
                                   spec_base="flowmo.spec:TimeSamplerSpec")
FLOW_LOSSES: Registry = Registry("flow loss", interface="flowmo.losses.flow:FlowLoss",
                                 spec_base="flowmo.spec:FlowLossSpec")
TIME_GRIDS: Registry = Registry("time grid", interface="flowmo.samplers.grids:TimeGrid",
                                spec_base="flowmo.spec:TimeGridSpec")
SOLVERS: Registry = Registry("ODE solver", interface="flowmo.samplers.solvers:Solver",
                             spec_base="flowmo.spec:SolverSpec")
POSTTRAIN_OBJECTIVES: Registry = Registry("post-training objective",
                                          interface="flowmo.losses.posttrain:PosttrainObjective",
                                          spec_base="flowmo.spec:PosttrainSpec")
PERCEPTUAL_DISTANCES: Registry = Registry("perceptual distance", interface="flowmo.losses.perceptual:PerceptualDistance",
                                          spec_base="flowmo.spec:PerceptualSpec")
GENERATORS: Registry = Registry("token generator", interface="flowmo.generators.base:TokenGenerator",
                                check="flowmo.generators.base:check_constructed",
                                spec_base="flowmo.spec:GeneratorSpec",
                                wiring=("vocab_size", "seq_len", "num_classes"), sizes=("vocab_size", "seq_len"))

REGISTRIES = {
    "backbone": BACKBONES,
    "quantizer": QUANTIZERS,
    "time_sampler": TIME_SAMPLERS,
    "flow_loss": FLOW_LOSSES,
    "time_grid": TIME_GRIDS,
    "solver": SOLVERS,
    "posttrain": POSTTRAIN_OBJECTIVES,
    "perceptual": PERCEPTUAL_DISTANCES,
    "generator": GENERATORS,
}

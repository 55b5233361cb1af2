"""A conformance kit for people writing their own components: one check per component kind.

Each ``check_*`` function runs property-based tests (with `hypothesis`_) against one
component and raises ``AssertionError`` naming the first property that failed (a component
that gives different results for the same input is reported as "non-deterministic"); on
success it returns a small report, ``{property name: examples run}``. The kinds and their
checks:

=========================  ==========================  =====================================
kind (registry)            interface                   check
=========================  ==========================  =====================================
backbone                   flowmo.blocks.Backbone       :func:`check_backbone`
quantizer                  flowmo.quantizers.Quantizer  :func:`check_quantizer`
time sampler               flowmo.losses.TimeSampler    :func:`check_time_sampler`
flow loss                  flowmo.losses.FlowLoss       :func:`check_flow_loss`
time grid                  flowmo.samplers.TimeGrid     :func:`check_time_grid`
ODE solver                 flowmo.samplers.Solver       :func:`check_solver`
post-training objective    flowmo.losses.PosttrainObjective  :func:`check_posttrain`
perceptual distance        flowmo.losses.PerceptualDistance  :func:`check_distance`
token generator            flowmo.generators.TokenGenerator  :func:`check_generator`
=========================  ==========================  =====================================

:func:`check_component` builds any registered component from its spec and runs the right
check. Use them in your own test suite::

    from flowmo.testing import check_component, check_quantizer, check_solver, check_time_grid

    def test_my_quantizer():
        check_quantizer(lambda: MyVQ(codebook_size=256, channels=16), channels=16)

    def test_my_registered_grid():
        check_component(flowmo.TimeGridSpec.model_validate({"name": "my_grid"}))

    def test_my_solver():
        check_solver(MyRK4(), order=2)   # order: the highest order the kit should hold it to

The checks run deterministically (``derandomize=True``) on the CPU (a quantizer is fed
on the device of its parameters/buffers). hypothesis is imported only when a check runs;
install it with ``pip install hypothesis``.

The package holds one module per kind's check (``quantizer``, ``time_sampler``, ``solver``,
``time_grid``, ``flow_loss``, ``posttrain``, ``distance``, ``backbone``, ``generator``), the dispatcher
(``component``), and what the checks share: ``checker`` (the hypothesis runner and tensor
comparisons), ``quantizer_probe`` (the quantizer's calls, validated), ``quantizer_stochastic`` (the
quantizer check's properties for continuous and stochastic bottlenecks) and ``loss_harness`` (the
stand-in decoder the loss kinds run against). Import the checks from ``flowmo.testing``.

.. _hypothesis: https://hypothesis.readthedocs.io
"""

from .backbone import check_backbone
from .component import check_component
from .distance import check_distance
from .flow_loss import check_flow_loss
from .generator import check_generator
from .posttrain import check_posttrain
from .quantizer import check_quantizer
from .solver import check_solver
from .time_grid import check_time_grid
from .time_sampler import check_time_sampler

__all__ = ["check_quantizer", "check_time_sampler", "check_solver", "check_time_grid", "check_backbone",
           "check_flow_loss", "check_distance", "check_posttrain", "check_generator", "check_component"]

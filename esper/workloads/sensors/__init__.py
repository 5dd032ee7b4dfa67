"""The Nervous System: sensors that read a living network's state for Emrakul.

Per prunable tensor (keyed by full parameter name): empirical Fisher, GSNR, gradient
coherence and contact-aware Fisher from one extra backward pass (:mod:`.gradients`); Fisher
history and the FGSF trigger (:mod:`.fisher`); Hutchinson Hessian trace and diagonal
(:mod:`.hessian`); the flip-flop detector (:mod:`.flipflop`); ReDo dormant units and effective
rank (:mod:`.activity`); the layer graph and its GNN embedding (:mod:`.topology`); the
surgery-impact predictor (:mod:`.impact`); and the composite state (:mod:`.state`), all behind
:class:`NervousSystem` (:mod:`.nervous_system`), which returns a :class:`Reading`
(:mod:`.reading`). Plain PyTorch; no Ray.
"""

from esper.workloads.sensors.activity import (
    ACTIVATIONS,
    ActivityStats,
    activity_statistics,
    dormant_scores,
    effective_rank,
    singular_values,
    stable_rank,
    unit_matrix,
)
from esper.workloads.sensors.capture import (
    LayerCall,
    LayerCapture,
    layer_modules,
    prunable_parameters,
)
from esper.workloads.sensors.config import SensorConfig
from esper.workloads.sensors.features import NODE_SENSOR_FEATURES
from esper.workloads.sensors.fisher import (
    TOTAL,
    FGSFSignal,
    FGSFTrigger,
    FisherHistory,
    rigid_weights,
)
from esper.workloads.sensors.flipflop import FlipFlopDetector, FlipFlopStats
from esper.workloads.sensors.gradients import (
    GradientReport,
    GradientStats,
    LossFn,
    boundary_samples,
    check_masks,
    gradient_statistics,
    margins,
    per_sample_cross_entropy,
)
from esper.workloads.sensors.hessian import (
    HessianStats,
    hessian_vector_product,
    hutchinson,
    rademacher,
)
from esper.workloads.sensors.impact import ImpactPredictor
from esper.workloads.sensors.nervous_system import NervousSystem
from esper.workloads.sensors.reading import Reading
from esper.workloads.sensors.state import (
    GLOBAL_FEATURES,
    GLOBAL_LAYER_FEATURES,
    LAYER_FEATURES,
    GlobalState,
    Observation,
    global_state_names,
    observation_names,
)
from esper.workloads.sensors.topology import (
    STRUCTURAL_FEATURES,
    LayerGraph,
    TopologyEncoder,
    trace_layer_graph,
)

__all__ = [
    "ACTIVATIONS",
    "GLOBAL_FEATURES",
    "GLOBAL_LAYER_FEATURES",
    "LAYER_FEATURES",
    "NODE_SENSOR_FEATURES",
    "STRUCTURAL_FEATURES",
    "TOTAL",
    "ActivityStats",
    "FGSFSignal",
    "FGSFTrigger",
    "FisherHistory",
    "FlipFlopDetector",
    "FlipFlopStats",
    "GlobalState",
    "GradientReport",
    "GradientStats",
    "HessianStats",
    "ImpactPredictor",
    "LayerCall",
    "LayerCapture",
    "LayerGraph",
    "LossFn",
    "NervousSystem",
    "Observation",
    "Reading",
    "SensorConfig",
    "TopologyEncoder",
    "activity_statistics",
    "boundary_samples",
    "check_masks",
    "dormant_scores",
    "effective_rank",
    "global_state_names",
    "gradient_statistics",
    "hessian_vector_product",
    "hutchinson",
    "layer_modules",
    "margins",
    "observation_names",
    "per_sample_cross_entropy",
    "prunable_parameters",
    "rademacher",
    "rigid_weights",
    "singular_values",
    "stable_rank",
    "trace_layer_graph",
    "unit_matrix",
]

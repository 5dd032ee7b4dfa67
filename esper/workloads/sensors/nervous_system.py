"""The Nervous System: every sensor behind one ``sense`` call, with its state.

One reading costs a forward and an output-gradient backward pass (Fisher, GSNR, coherence,
contact-aware Fisher, and the activations for ReDo scores and effective ranks, all from the
same pass: about 1.8 plain training steps), one Hessian-vector product per Hutchinson probe
(about 2.5 steps each), an eigendecomposition of a small Gram matrix per layer and some
bookkeeping: about seven plain training steps in all for LeNet-300-100 with a batch of 128
and the defaults, single-threaded. Hooks live only for the duration of a call. Between
readings the organism tells it about mask updates (:meth:`NervousSystem.record_masks`, for
the flip-flop detector) and surgery outcomes (:meth:`NervousSystem.record_surgery`, for the
impact predictor).

Devices: the per-weight work (per-sample gradients, Fisher, GSNR, Hessian-vector products,
activations) runs on the host's device, and its per-weight results stay there in the
:class:`Reading`. Hutchinson probes come from a CPU generator and are moved to the device, so CPU
and CUDA runs probe alike. Everything else — observations, global state, the topology GNN, the
impact predictor, flip-flop history, Fisher/GSNR series — is small and stays on the CPU; what
crosses into it is a Python float or an explicit CPU copy.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor, nn

from esper.seeding import derive_seed, generator
from esper.workloads.sensors.activity import activity_statistics
from esper.workloads.sensors.capture import prunable_parameters
from esper.workloads.sensors.config import SensorConfig
from esper.workloads.sensors.features import (
    NODE_SENSOR_FEATURES,
    global_state,
    layer_features,
    node_sensor_features,
)
from esper.workloads.sensors.fisher import FGSFTrigger, FisherHistory
from esper.workloads.sensors.flipflop import FlipFlopDetector
from esper.workloads.sensors.fused import TrainingTraffic
from esper.workloads.sensors.gradients import BoundaryFn, LossFn, check_masks, gradient_statistics
from esper.workloads.sensors.hessian import HessianStats, hutchinson
from esper.workloads.sensors.impact import ImpactCredit, ImpactPredictor, train_encoder_on_impact
from esper.workloads.sensors.reading import Reading
from esper.workloads.sensors.state import (
    LAYER_FEATURES,
    Observation,
    global_state_names,
    observation_names,
)
from esper.workloads.sensors.topology import LayerGraph, TopologyEncoder, trace_layer_graph

__all__ = ["NervousSystem"]

_STATE_VERSION = 1


class NervousSystem:
    """Owns the stateful sensors and turns one batch into a :class:`Reading`.

    Lifecycle: ``prepare(model, example_input)`` once, then ``sense`` at each surgery step;
    ``record_masks`` after every mask update; ``record_surgery`` once a surgery's loss change
    is known; ``state_dict``/``load_state_dict`` for checkpoints (load after ``prepare``).

    Args:
        config: Sensor settings.
        loss_fn: Per-sample loss (default: cross-entropy); the host's training loss.
        boundary_fn: The contact-aware Fisher's samples (default: lowest margin or highest loss).
    """

    def __init__(
        self, config: SensorConfig | None = None, loss_fn: LossFn | None = None,
        boundary_fn: BoundaryFn | None = None,
    ) -> None:  # fmt: skip
        self.config = config or SensorConfig()
        self.loss_fn, self.boundary_fn = loss_fn, boundary_fn
        c = self.config
        self.fisher_history = FisherHistory(c.history)
        self.trigger = FGSFTrigger(
            c.fisher_window, c.saturation, c.min_rise, c.gsnr_drop, c.fgsf_cooldown
        )
        self.flipflop = FlipFlopDetector(c.flipflop_window)
        self._generator = generator(c.seed, "nervous_system", "hutchinson")
        self._hessian_trace: dict[str, float] = {}
        self._losses: list[float] = []
        self._count = 0
        self.credit = ImpactCredit()
        self._graph: LayerGraph | None = None
        self.encoder: TopologyEncoder | None = None
        self.impact: ImpactPredictor | None = None

    # -- lifecycle -------------------------------------------------------------------------

    def prepare(self, model: nn.Module, example_input: Tensor) -> None:
        """Trace the layer graph and build the topology encoder and impact predictor.

        Args:
            model: The host.
            example_input: A batch (one or two examples suffice) to trace the forward pass.
        """
        c = self.config
        graph = trace_layer_graph(model, example_input[:2])
        if len(graph) > c.max_layers:
            raise ValueError(
                f"the host has {len(graph)} prunable tensors but the global state has "
                f"{c.max_layers} layer slots; raise SensorConfig.max_layers"
            )
        self._graph = graph
        node_width = graph.structural_features().shape[1] + len(NODE_SENSOR_FEATURES)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(derive_seed(c.seed, "nervous_system", "topology"))
            self.encoder = TopologyEncoder(node_width, c.gnn_hidden, c.embedding, c.gnn_rounds)
        self.impact = ImpactPredictor(
            len(self.impact_feature_names), c.impact_forgetting, c.impact_prior
        )

    @property
    def graph(self) -> LayerGraph:
        """The traced layer graph."""
        if self._graph is None:
            raise RuntimeError("call NervousSystem.prepare(model, example_input) first")
        return self._graph

    @property
    def observation_names(self) -> tuple[str, ...]:
        """Feature names of every :class:`Observation` this system produces."""
        return observation_names(self.config.embedding)

    @property
    def global_state_names(self) -> tuple[str, ...]:
        """Feature names of every :class:`GlobalState` this system produces."""
        return global_state_names(self.config.max_layers)

    @property
    def impact_feature_names(self) -> tuple[str, ...]:
        """Inputs of the impact predictor: embedding, sensor summaries, action."""
        summaries = tuple(f for f in LAYER_FEATURES if f != "predicted_impact")
        embedding = tuple(f"topo_{i}" for i in range(self.config.embedding))
        return embedding + summaries + self.config.action_features

    # -- sensing ---------------------------------------------------------------------------

    def sense(
        self,
        model: nn.Module,
        x: Tensor,
        y: Tensor,
        masks: Mapping[str, Tensor] | None = None,
        *,
        probes: int | None = None,
        traffic: TrainingTraffic | None = None,
    ) -> Reading:
        """Read the network on one batch.

        Args:
            model: The prepared host (its forward is the masked forward).
            x: Inputs, batch first.
            y: Targets.
            masks: Boolean masks by parameter name (missing layers count as dense).
            probes: Hutchinson probes for this reading (default: the config's, at every
                ``hutchinson_every``-th reading).
            traffic: The steps that trained on ``x`` (fused sensing): gradient statistics and
                layer outputs come from their traffic; only Hutchinson reads ``x`` again.
        """
        c, graph = self.config, self.graph
        params = prunable_parameters(model)
        if tuple(params) != graph.names:
            raise ValueError(
                f"model's prunable tensors {list(params)} differ from the prepared ones "
                f"{list(graph.names)}"
            )
        checked = check_masks(params, masks)
        names = list(graph.names)
        if traffic is not None:  # fused: summed from the training steps' own traffic
            report = traffic.report(checked, loss_fn=self.loss_fn, boundary_fn=self.boundary_fn,
                                    boundary_quantile=c.boundary_quantile)  # fmt: skip
        else:
            report = gradient_statistics(
                model, x, y, params=names, loss_fn=self.loss_fn, masks=checked,
                boundary_quantile=c.boundary_quantile, boundary_fn=self.boundary_fn,
                keep_outputs=True,
            )  # fmt: skip
        hessian = self._hessian(model, x, y, checked, probes)
        activity = {
            n: activity_statistics(
                graph.unit_output(model, i, report.outputs[n]),
                channels_first=graph.kinds[i].startswith("conv"),
                threshold=c.dormant_threshold,
            )
            for i, n in enumerate(names)
            if n in report.outputs
        }
        flipflop = {n: self.flipflop.layer(n) for n in names if n in self.flipflop}
        self.fisher_history.append(
            {n: s.fisher_trace for n, s in report.layers.items()},
            {n: s.gsnr_mean for n, s in report.layers.items()},
            report.fisher_trace,
            report.gsnr_mean,
        )
        signal = self.trigger.update(self.fisher_history)
        loss = float(report.losses.mean())
        self._losses.append(loss)
        del self._losses[: -c.history]
        density = {
            n: float(checked[n].float().mean()) if n in checked else float((p != 0).float().mean())
            for n, p in params.items()
        }
        base = {
            n: layer_features(
                graph,
                i,
                density[n],
                report.layers[n],
                self._hessian_trace.get(n, 0.0),
                self.fisher_history.trend(n, c.fisher_window),
                n in signal.layers,
                flipflop.get(n),
                activity.get(n),
            )
            for i, n in enumerate(names)
        }
        sensed = torch.stack([node_sensor_features(base[n]) for n in names])
        node_features = torch.cat([graph.structural_features(), sensed], dim=1)
        assert self.encoder is not None and self.impact is not None
        with torch.no_grad():
            embeddings = self.encoder(node_features, graph)
        impact_inputs = {
            n: torch.cat([embeddings[i], torch.tensor(list(base[n].values()))])
            for i, n in enumerate(names)
        }
        reference = torch.tensor(c.reference_action, dtype=torch.float32)
        observations = {}
        for i, n in enumerate(names):
            predicted = float(self.impact.predict(torch.cat([impact_inputs[n], reference])))
            values = [*base[n].values(), predicted, *embeddings[i].tolist()]
            observations[n] = Observation(
                self.observation_names, torch.tensor(values, dtype=torch.float32), n
            )
        sizes = {n: p.numel() for n, p in params.items()}
        state = global_state(
            self.global_state_names, c.max_layers, base, report, density, sizes, loss,
            self._loss_trend(), signal,
        )  # fmt: skip
        self._count += 1
        return Reading(
            observations, state, report, hessian, activity, flipflop, signal, node_features,
            embeddings, impact_inputs, loss, self._count - 1,
        )  # fmt: skip

    def _hessian(
        self,
        model: nn.Module,
        x: Tensor,
        y: Tensor,
        masks: Mapping[str, Tensor],
        probes: int | None,
    ) -> dict[str, HessianStats]:
        """Hutchinson estimates, folded into the smoothed per-layer traces."""
        c = self.config
        if probes is None:  # the config's probes, at its pace
            probes = 0 if self._count % c.hutchinson_every else c.hutchinson_probes
        if probes == 0:
            return {}
        hessian = hutchinson(
            model,
            x,
            y,
            params=list(self.graph.names),
            probes=probes,
            generator=self._generator,
            loss_fn=self.loss_fn,
            masks=masks,
            per_layer=c.hutchinson_per_layer,
        )
        for n, h in hessian.items():
            old = self._hessian_trace.get(n, h.trace)
            self._hessian_trace[n] = c.hessian_decay * old + (1 - c.hessian_decay) * h.trace
        return hessian

    def _loss_trend(self) -> float:
        w = self.config.fisher_window
        if len(self._losses) <= w:
            return 0.0
        old = self._losses[-1 - w]
        return max(-10.0, min(10.0, (self._losses[-1] - old) / (abs(old) + 1e-12)))

    # -- between readings --------------------------------------------------------------------

    def record_masks(self, masks: Mapping[str, Tensor]) -> None:
        """Record one mask update (every layer's mask after it) for the flip-flop detector."""
        unknown = [n for n in masks if n not in self.graph.names]
        if unknown:
            raise KeyError(
                f"masks for unknown tensors {unknown}; prunable: {list(self.graph.names)}"
            )
        self.flipflop.update(masks)

    def impact_features(self, reading: Reading, layer: str, action: Mapping[str, float]) -> Tensor:
        """Impact-predictor input for ``action`` on ``layer``, from the reading before it.

        Raises:
            ValueError: ``action`` does not name exactly the configured action features.
        """
        expected = self.config.action_features
        if set(action) != set(expected):
            raise ValueError(
                f"action features must be exactly {list(expected)}, got {list(action)}"
            )
        values = torch.tensor([float(action[k]) for k in expected], dtype=torch.float32)
        return torch.cat([reading.impact_inputs[layer], values])

    def predict_impact(self, reading: Reading, layer: str, action: Mapping[str, float]) -> float:
        """Predicted loss change of ``action`` on ``layer``."""
        assert self.impact is not None
        return float(self.impact.predict(self.impact_features(reading, layer, action)))

    def record_surgery(
        self, reading: Reading, layer: str, action: Mapping[str, float], observed_delta: float
    ) -> None:
        """Teach the impact predictor the loss change a surgery on ``layer`` caused."""
        assert self.impact is not None
        self.impact.update(self.impact_features(reading, layer, action), observed_delta)

    def record_surgeries(
        self,
        reading: Reading,
        actions: Mapping[str, Mapping[str, float]],
        changed: Mapping[str, int],
        observed_delta: float,
    ) -> None:
        """Teach the impact predictor (and the topology encoder) one surgery's loss change.

        Each touched layer is credited with its share of the change's excess over a running
        baseline (:class:`~esper.workloads.sensors.impact.ImpactCredit`; ``changed``: its
        weights that changed mask state). With ``gnn_lr > 0`` the encoder takes one step
        toward predicting these credits first
        (:func:`~esper.workloads.sensors.impact.train_encoder_on_impact`).
        """
        credited = self.credit.credit(actions, changed, observed_delta)
        if credited and self.config.gnn_lr > 0:  # the encoder first, on the coefficients used
            assert self.encoder is not None and self.impact is not None
            encoder, names, width = self.encoder, list(self.graph.names), self.config.embedding
            rows = [(names.index(n), self.impact_features(reading, n, actions[n])[width:], d)
                    for n, d in credited.items()]  # fmt: skip
            x = reading.node_features.to(next(encoder.parameters()))
            embed = lambda: encoder(x, self.graph)  # noqa: E731
            train_encoder_on_impact(encoder, embed, rows, self.impact.theta, self.config.gnn_lr)
        for name, delta in credited.items():
            self.record_surgery(reading, name, actions[name], delta)

    # -- checkpoints -------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """Every piece of sensor state, for exact continuation after a restore."""
        assert self.encoder is not None and self.impact is not None, "prepare() first"
        return {
            "version": _STATE_VERSION,
            "layers": list(self.graph.names),
            "count": self._count,
            "generator": self._generator.get_state(),
            "hessian_trace": dict(self._hessian_trace),
            "losses": list(self._losses),
            "fisher_history": self.fisher_history.state_dict(),
            "fgsf": self.trigger.state_dict(),
            "flipflop": self.flipflop.state_dict(),
            "impact": self.impact.state_dict(),
            "impact_baseline": self.credit.baseline,
            "encoder": {k: v.clone() for k, v in self.encoder.state_dict().items()},
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`state_dict` output into a system prepared on the same host."""
        assert self.encoder is not None and self.impact is not None, "prepare() first"
        if state["version"] != _STATE_VERSION:
            raise ValueError(f"sensor state version {state['version']}, expected {_STATE_VERSION}")
        if list(state["layers"]) != list(self.graph.names):
            raise ValueError("sensor state was saved for a host with other prunable tensors")
        self._count = int(state["count"])
        self._generator.set_state(state["generator"].clone())
        self._hessian_trace = dict(state["hessian_trace"])
        self._losses = [float(v) for v in state["losses"]]
        self.fisher_history.load_state_dict(state["fisher_history"])
        self.trigger.load_state_dict(state["fgsf"])
        self.flipflop.load_state_dict(state["flipflop"])
        self.impact.load_state_dict(state["impact"])
        self.credit.baseline = float(state.get("impact_baseline", 0.0))
        self.encoder.load_state_dict(state["encoder"])

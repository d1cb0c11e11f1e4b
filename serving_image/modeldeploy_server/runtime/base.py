"""The runtime interface: what the protocol DataPlane may ask of a loaded model.

It is the seam between protocol and model format, as MLServer separates its DataPlane from its
runtimes: the DataPlane (and every protocol over it: V1, V2 JSON, later V2 binary and gRPC) only
calls what is declared here, so a second runtime (an MLflow directory) slots in by implementing
``Runtime``, without touching protocol logic. Inputs and outputs are numpy arrays with rows first,
because the shared micro-batcher stacks them across requests.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

Array = np.ndarray[Any, Any]


@dataclass(frozen=True, slots=True)
class TensorSpec:
    """A tensor as V2 model metadata describes it; -1 in ``shape`` means any size."""

    name: str
    datatype: str
    shape: tuple[int, ...]

    def metadata(self) -> dict[str, Any]:
        return {"name": self.name, "datatype": self.datatype, "shape": list(self.shape)}


@dataclass(frozen=True, slots=True)
class OutputSpec(TensorSpec):
    """An output a model offers. ``probabilities`` marks class probabilities (V1's
    PREDICT_PROBA mode answers with that output instead of the default one)."""

    probabilities: bool = False


@dataclass(frozen=True, slots=True)
class RuntimeInfo:
    """What a loaded model says about itself, fixed at load: for metrics labels and logs."""

    platform: str  # V2 metadata "platform", e.g. "sklearn"
    format: str  # the artifact format it was loaded from
    model_class: str  # the estimator's (or flavour's) dotted class name
    framework_version: str  # the library version serving it
    trained_version: str | None  # the library version that saved it, when known
    version_warnings: tuple[str, ...]  # one sentence per mismatch between the two
    load_seconds: float
    predict_path: str  # how predictions are computed, e.g. "estimator"
    classifier: bool  # the default output holds class labels (counted per class in metrics)


class Runtime(Protocol):
    """One loaded model of some format, ready to predict."""

    @property
    def info(self) -> RuntimeInfo: ...

    @property
    def feature_names(self) -> tuple[str, ...] | None:
        """Column names in the order the model expects them, when it knows them."""

    @property
    def inputs(self) -> tuple[TensorSpec, ...]: ...

    @property
    def named_columns(self) -> bool:
        """Several V2 inputs must be named by ``feature_names`` (a signature names them);
        False lets them be taken in request order when their names are something else."""

    @property
    def outputs(self) -> tuple[OutputSpec, ...]:
        """What the model can compute; the first is the default output."""

    def parameters(self) -> dict[str, Any]:
        """Format-specific facts for the V2 model metadata ``parameters``."""

    def resolve_output(self, name: str, where: str) -> str:
        """The ``outputs`` name a requested output (or one of its aliases) stands for.

        InvalidInputError naming ``where`` when the model has no such output.
        """

    def check_input(self, x: Array, what: str) -> Array:
        """``x`` as the model takes it (e.g. one column reshaped to [N, 1]), or
        InvalidInputError naming ``what`` and the shape or value that is wrong."""

    def predict(self, x: Array, outputs: tuple[str, ...]) -> list[Array]:
        """One array per name in ``outputs``, each with ``len(x)`` rows.

        Called by the micro-batcher with a whole coalesced batch, in its worker thread or on the
        event loop, never twice at once. InvalidInputError for input the model refuses (a 400);
        any other exception is the model failing (a 500).
        """

    def warm_up(self) -> None:
        """One throwaway prediction so the first request doesn't pay for lazy initialisation."""


def probabilities_output(runtime: Runtime) -> str | None:
    """The name of the output holding class probabilities, if the model has one."""
    return next((o.name for o in runtime.outputs if o.probabilities), None)

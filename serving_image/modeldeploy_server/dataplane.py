"""The protocol DataPlane: readiness, model name/version checks and V1/V2 shaping, over a runtime.

Transports decode a request (codec.py for JSON; a binary-tensor or gRPC codec later) and hand the
DataPlane the decoded message and path parameters; it answers with a result dataclass (numpy
arrays, plus the predict time for Server-Timing) or raises a ServerError subclass. What the model
is (scikit-learn, MLflow...) stays behind the ``Runtime`` interface, and the micro-batcher and
metrics are shared by every protocol, so each protocol rule is written and tested once, without a
web server. Import-linter forbids this module the web stack, storage and any concrete runtime.
"""

from __future__ import annotations

import enum
import logging
from dataclasses import dataclass
from typing import Any

import numpy as np

from modeldeploy_server import __version__
from modeldeploy_server.batcher import Array, BatchResult, MicroBatcher
from modeldeploy_server.codec import (
    Tensor,
    V1Request,
    V1Result,
    V2Request,
    V2Result,
    records_to_array,
)
from modeldeploy_server.drift import DEFAULT_WINDOW_ROWS, DriftTracker
from modeldeploy_server.errors import (
    InferenceError,
    InvalidInputError,
    ModelNotFoundError,
    ModelNotReadyError,
    ServerError,
    brief,
    clip,
)
from modeldeploy_server.metrics import Metrics
from modeldeploy_server.profile import Profile
from modeldeploy_server.runtime.base import Runtime, probabilities_output

log = logging.getLogger(__name__)


class State(enum.Enum):
    LOADING = "loading"
    READY = "ready"
    FAILED = "failed"


@dataclass(frozen=True, slots=True)
class ServingInfo:
    """What the server says about itself; fixed at start."""

    name: str
    version: str
    track: str
    storage_uri: str  # already stripped of credentials
    sha256: str  # expected digest, may be empty until the artifact is fetched
    predict_proba_v1: bool = False


class DataPlane:
    """One model, its readiness, and the V1/V2 operations over it."""

    def __init__(
        self,
        info: ServingInfo,
        metrics: Metrics,
        *,
        max_batch_rows: int = 64,
        max_wait_s: float = 0.002,
    ) -> None:
        self.info = info
        self.metrics = metrics
        self.state = State.LOADING
        self.phase = "starting"  # human-readable progress for 503 messages
        self.failure: str | None = None
        self.runtime: Runtime | None = None
        self.artifact_sha256 = info.sha256
        self._max_rows = max_batch_rows
        self._max_wait = max_wait_s
        self._batcher: MicroBatcher | None = None
        self._v1_outputs: tuple[str, ...] = ()
        self._default_output = ""
        self.drift: DriftTracker | None = None

    # ---- lifecycle -------------------------------------------------------------------------

    def set_phase(self, phase: str) -> None:
        self.phase = phase

    async def set_ready(
        self,
        runtime: Runtime,
        sha256: str,
        *,
        profile: Profile | None = None,
        profile_source: str = "",
        drift_off_reason: str = "no reference profile",
        drift_window_rows: int = DEFAULT_WINDOW_ROWS,
    ) -> None:
        """Install the loaded model (and its reference profile, for drift tracking); must be
        called on the event loop that serves requests."""
        self.runtime = runtime
        self.artifact_sha256 = sha256
        self._default_output = runtime.outputs[0].name
        proba = probabilities_output(runtime)
        # KServe's PREDICT_PROBA: V1 "predictions" are the probabilities when the model has them.
        self._v1_outputs = (
            (proba,) if self.info.predict_proba_v1 and proba else (self._default_output,)
        )
        width = runtime.inputs[0].shape[-1] if runtime.inputs else -1
        self.drift = DriftTracker(
            profile,
            self.metrics,
            window_rows=drift_window_rows,
            feature_names=runtime.feature_names,
            n_features=width if width > 0 else None,
            source=profile_source,
            off_reason=drift_off_reason,
        )
        self._batcher = MicroBatcher(
            runtime.predict,
            max_batch_rows=self._max_rows,
            max_wait_s=self._max_wait,
            observe=self._observe_batch,
            after=self._observe_rows,
        )
        self._batcher.start()
        facts = runtime.info
        self.metrics.load_seconds.set(facts.load_seconds)
        self.metrics.info.labels(
            name=self.info.name,
            version=self.info.version,
            uri=self.info.storage_uri,
            sha256=sha256,
            format=facts.format,
            estimator=facts.model_class,
            sklearn_version=facts.framework_version,
            trained_sklearn_version=facts.trained_version or "",
            track=self.info.track,
        ).set(1)
        if facts.version_warnings:
            self.metrics.version_mismatch.labels(
                facts.trained_version or "unknown", facts.framework_version
            ).set(1)
        self.state = State.READY
        self.phase = "ready"
        self.metrics.ready.set(1)

    def set_failed(self, reason: str) -> None:
        self.state = State.FAILED
        self.phase = "failed"
        self.failure = reason
        self.metrics.ready.set(0)

    async def stop(self) -> None:
        if self._batcher is not None:
            await self._batcher.stop()
            self._batcher = None
        if self.state is State.READY:
            # No batcher, no predictions: a request arriving now is a 503, not a 500.
            self.state = State.LOADING
            self.phase = "shutting down"
        self.metrics.ready.set(0)

    # ---- health and metadata ---------------------------------------------------------------

    @property
    def ready(self) -> bool:
        return self.state is State.READY

    def not_ready_message(self) -> str:
        if self.state is State.FAILED:
            return f"model {self.info.name} failed to load: {self.failure}"
        return f"model {self.info.name} is not ready yet ({self.phase})"

    def _check_name(self, name: str, version: str | None = None) -> None:
        if name != self.info.name:
            raise ModelNotFoundError(
                f"model {brief(name)} does not exist; this server serves {self.info.name!r}"
            )
        if version is not None and version != self.info.version:
            raise ModelNotFoundError(
                f"model {name!r} has no version {brief(version)}; it serves version "
                f"{self.info.version!r}"
            )

    def require_ready(self, name: str, version: str | None = None) -> Runtime:
        """The runtime serving ``name`` (and ``version``); 404 for another model, 503 until
        it is loaded. Transports call it before decoding a body, so a request for a model that
        isn't there is answered as such whatever its body holds."""
        self._check_name(name, version)
        if self.runtime is None or self.state is not State.READY:
            raise ModelNotReadyError(self.not_ready_message())
        return self.runtime

    def v1_models(self) -> dict[str, Any]:
        return {"models": [self.info.name]}

    def v1_model(self, name: str) -> dict[str, Any]:
        self.require_ready(name)
        return {"name": name, "ready": True}

    def v2_server_metadata(self) -> dict[str, Any]:
        # binary_tensor_data: Triton's and KServe's name for the REST binary framing.
        return {
            "name": "modeldeploy-server",
            "version": __version__,
            "extensions": ["binary_tensor_data"],
        }

    def v2_model_ready(self, name: str, version: str | None = None) -> dict[str, Any]:
        self.require_ready(name, version)
        return {"name": name, "ready": True}

    def v2_model_metadata(self, name: str, version: str | None = None) -> dict[str, Any]:
        self._check_name(name, version)
        rt = self.runtime
        if rt is None:
            raise ModelNotReadyError(self.not_ready_message())
        params = {
            **rt.parameters(),
            "sha256": self.artifact_sha256,
            "storage_uri": self.info.storage_uri,
            "track": self.info.track,
            "drift": self.drift.describe() if self.drift is not None else "off: not loaded",
        }
        return {
            "name": self.info.name,
            "versions": [self.info.version],
            "platform": rt.info.platform,
            "inputs": [t.metadata() for t in rt.inputs],
            "outputs": [t.metadata() for t in rt.outputs],
            "parameters": params,
        }

    # ---- inference -------------------------------------------------------------------------

    def _observe_batch(
        self, rows: int, jobs: int, seconds: float, outputs: tuple[str, ...], out: list[Array]
    ) -> None:
        m = self.metrics
        m.batch_rows.observe(rows)
        m.batch_requests.observe(jobs)
        m.predict_seconds.observe(seconds)
        rt = self.runtime
        if rt is not None and self._default_output in outputs:
            m.observe_predictions(out[outputs.index(self._default_output)], rt.info.classifier)

    def _observe_rows(self, x: Array, outputs: tuple[str, ...], out: list[Array]) -> None:
        # After the responses (batcher.AfterFn): binning is drift.py's, off the critical path.
        if self.drift is None:
            return
        default = self._default_output
        self.drift.observe(x, out[outputs.index(default)] if default in outputs else None)

    async def _infer(self, x: Array, outputs: tuple[str, ...], what: str) -> BatchResult:
        """The model's answer for ``x``; input it refuses is a 400 naming ``what``."""
        self.metrics.request_rows.observe(x.shape[0])
        assert self._batcher is not None
        try:
            return await self._batcher.submit(x, outputs)
        except InvalidInputError as exc:
            raise InvalidInputError(f"{what}: {exc.message}") from None
        except ServerError:
            raise
        except Exception as exc:  # the runtime turned bad input into InvalidInputError already
            log.exception("inference failed")
            raise InferenceError(
                f"inference failed: {type(exc).__name__}: {clip(str(exc))}"
            ) from None

    async def v1_predict(self, name: str, req: V1Request) -> V1Result:
        rt = self.require_ready(name)
        if req.records is not None:
            if rt.feature_names is None:
                raise InvalidInputError(
                    "instances are objects keyed by feature name, but the model was not fitted "
                    "with feature names; send lists of values in training column order"
                )
            x = records_to_array(req.records, rt.feature_names)
        else:
            assert req.instances is not None
            x = req.instances
        x = rt.check_input(x, 'field "instances"')
        result = await self._infer(x, self._v1_outputs, 'field "instances"')
        return V1Result(result.outputs[0], result.seconds)

    def _v2_matrix(self, rt: Runtime, inputs: list[Tensor]) -> tuple[Array, str]:
        """The model's input matrix, and how errors name it (the request's field)."""
        if len(inputs) == 1:
            what = f"inputs[0] ({clip(inputs[0].name, 40)})"
            return rt.check_input(inputs[0].array, what), what
        # Several inputs: one column each (KServe/MLServer's "one tensor per feature" form).
        names = [i.name for i in inputs]
        seen: dict[str, int] = {}
        for j, n in enumerate(names):
            if n in seen:
                raise InvalidInputError(
                    f"inputs[{j}] has the name of inputs[{seen[n]}] ({clip(n, 40)}); with several "
                    "inputs each is one feature column, named once"
                )
            seen[n] = j
        # The request's index of each column, in the model's column order when the names are
        # its feature names; errors name inputs by the request's index.
        order = list(range(len(inputs)))
        if rt.feature_names is not None and set(names) == set(rt.feature_names):
            order = [seen[n] for n in rt.feature_names]
        elif rt.named_columns and rt.feature_names is not None:
            expected = rt.feature_names
            missing = [n for n in expected if n not in seen]
            unknown = [n for n in names if n not in set(expected)]
            parts = [f"missing {brief(missing)}"] if missing else []
            parts += [f"unknown {brief(unknown)}"] if unknown else []
            raise InvalidInputError(
                f"inputs name the model's columns, one input each: {', '.join(parts)}; "
                f"the model's columns are {clip(str(list(expected)))}"
            )
        cols = []
        for j in order:
            inp = inputs[j]
            a = inp.array
            if a.ndim == 2 and a.shape[1] == 1:
                a = a[:, 0]
            if a.ndim != 1:
                raise InvalidInputError(
                    f"inputs[{j}] ({clip(inp.name, 40)}) has shape {list(inp.array.shape)}; with "
                    "several inputs each must be one feature column of shape [N] or [N, 1]"
                )
            cols.append(a)
        for j, c in zip(order, cols, strict=True):
            if c.shape[0] != cols[0].shape[0]:
                raise InvalidInputError(
                    f"inputs[{j}] holds {c.shape[0]} rows but inputs[{order[0]}] holds "
                    f"{cols[0].shape[0]}; all inputs must hold the same number of rows"
                )
        x = (
            np.column_stack(cols)
            if len({c.dtype for c in cols}) == 1
            else np.column_stack([c.astype(object) for c in cols])
        )
        return rt.check_input(x, "inputs"), "inputs"

    async def v2_infer(self, name: str, version: str | None, req: V2Request) -> V2Result:
        rt = self.require_ready(name, version)
        if not req.outputs:  # the usual request: the default output alone
            x, what = self._v2_matrix(rt, req.inputs)
            result = await self._infer(x, (self._default_output,), what)
            tensors = [Tensor(self._default_output, result.outputs[0])]
        else:
            # Each requested name (or alias) -> the runtime's output; computed once if asked
            # twice, answered under the name the caller used.
            resolved = [
                rt.resolve_output(o, f"outputs[{j}].name") for j, o in enumerate(req.outputs)
            ]
            x, what = self._v2_matrix(rt, req.inputs)
            outputs = tuple(dict.fromkeys(resolved))
            result = await self._infer(x, outputs, what)
            by_output = dict(zip(outputs, result.outputs, strict=True))
            tensors = [Tensor(n, by_output[o]) for n, o in zip(req.outputs, resolved, strict=True)]
        return V2Result(self.info.name, self.info.version, req.id, tensors, result.seconds)

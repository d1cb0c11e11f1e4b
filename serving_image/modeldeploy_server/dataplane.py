"""The DataPlane: model state, input validation and inference, with no HTTP in sight.

Transports (the FastAPI routers in app.py) hand it raw body bytes and path parameters and get back
plain dicts (numpy arrays allowed, codec.encode_json writes them) or a ServerError subclass. That
keeps every protocol rule testable without a web server, and lets a second transport (gRPC, say)
reuse it unchanged. Import-linter forbids this module from importing the web stack or storage.
"""

from __future__ import annotations

import enum
import logging
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np

from modeldeploy_server import __version__
from modeldeploy_server.batcher import Array, MicroBatcher
from modeldeploy_server.codec import (
    OUTPUT_METHODS,
    PREDICT_OUTPUT,
    PROBA_OUTPUT,
    V2Input,
    decode_v1,
    decode_v2,
    records_to_array,
    v2_datatype,
    v2_tensor,
)
from modeldeploy_server.errors import (
    InferenceError,
    InvalidInputError,
    ModelNotFoundError,
    ModelNotReadyError,
    ServerError,
)
from modeldeploy_server.metrics import Metrics
from modeldeploy_server.model import LoadedModel

log = logging.getLogger(__name__)

# Errors an estimator raises for input it can't take (wrong dtype, unknown category, NaN...).
# They become 400s with the model's own message instead of 500s.
_INPUT_ERRORS = (ValueError, TypeError, IndexError, KeyError)


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
        self.model: LoadedModel | None = None
        self.artifact_sha256 = info.sha256
        self._max_rows = max_batch_rows
        self._max_wait = max_wait_s
        self._batcher: MicroBatcher | None = None

    # ---- lifecycle -------------------------------------------------------------------------

    def set_phase(self, phase: str) -> None:
        self.phase = phase

    async def set_ready(self, model: LoadedModel, sha256: str) -> None:
        """Install the loaded model; must be called on the event loop that serves requests."""
        self.model = model
        self.artifact_sha256 = sha256
        if model.feature_names is not None:
            # We order columns by feature_names_in_ ourselves and hand over numpy (no pandas in
            # the image); without this, every predict would warn about missing feature names.
            warnings.filterwarnings("ignore", message="X does not have valid feature names")
        self._batcher = MicroBatcher(
            self._predict,
            max_batch_rows=self._max_rows,
            max_wait_s=self._max_wait,
            observe=self._observe_batch,
        )
        self._batcher.start()
        self.metrics.load_seconds.set(model.load_seconds)
        self.metrics.info.labels(
            name=self.info.name,
            version=self.info.version,
            uri=self.info.storage_uri,
            sha256=sha256,
            format=model.format,
            estimator=model.estimator_class,
            sklearn_version=model.sklearn_version,
            trained_sklearn_version=model.trained_sklearn_version or "",
            track=self.info.track,
        ).set(1)
        if model.version_mismatch:
            self.metrics.version_mismatch.labels(
                model.trained_sklearn_version or "unknown", model.sklearn_version
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
                f"model {name!r} does not exist; this server serves {self.info.name!r}"
            )
        if version is not None and version != self.info.version:
            raise ModelNotFoundError(
                f"model {name!r} has no version {version!r}; it serves version "
                f"{self.info.version!r}"
            )

    def _require_ready(self, name: str, version: str | None = None) -> LoadedModel:
        self._check_name(name, version)
        if self.model is None or self.state is not State.READY:
            raise ModelNotReadyError(self.not_ready_message())
        return self.model

    def v1_models(self) -> dict[str, Any]:
        return {"models": [self.info.name]}

    def v1_model(self, name: str) -> dict[str, Any]:
        self._require_ready(name)
        return {"name": name, "ready": True}

    def v2_server_metadata(self) -> dict[str, Any]:
        return {"name": "modeldeploy-server", "version": __version__, "extensions": []}

    def v2_model_ready(self, name: str, version: str | None = None) -> dict[str, Any]:
        self._require_ready(name, version)
        return {"name": name, "ready": True}

    def v2_model_metadata(self, name: str, version: str | None = None) -> dict[str, Any]:
        self._check_name(name, version)
        m = self.model
        if m is None:
            raise ModelNotReadyError(self.not_ready_message())
        n = m.n_features if m.n_features is not None else -1
        predict_type = v2_datatype(m.classes) if m.classes is not None else "FP64"
        outputs: list[dict[str, Any]] = [
            {"name": PREDICT_OUTPUT, "datatype": predict_type, "shape": [-1]}
        ]
        if m.has_proba:
            n_classes = len(m.classes) if m.classes is not None else -1
            outputs.append({"name": PROBA_OUTPUT, "datatype": "FP64", "shape": [-1, n_classes]})
        params: dict[str, Any] = {
            "estimator": m.estimator_class,
            "format": m.format,
            "sklearn_version": m.sklearn_version,
            "trained_sklearn_version": m.trained_sklearn_version,
            "sklearn_version_warnings": m.version_warnings,
            "sha256": self.artifact_sha256,
            "storage_uri": self.info.storage_uri,
            "track": self.info.track,
            "accepts_nan": m.allow_nan,
            "predict_path": m.predict_path,
        }
        if m.feature_names is not None:
            params["feature_names"] = list(m.feature_names)
        if m.classes is not None:
            params["classes"] = m.classes.tolist()
        return {
            "name": self.info.name,
            "versions": [self.info.version],
            "platform": "sklearn",
            "inputs": [{"name": "input-0", "datatype": "FP64", "shape": [-1, n]}],
            "outputs": outputs,
            "parameters": params,
        }

    # ---- inference -------------------------------------------------------------------------

    def _predict(self, x: Array, methods: tuple[str, ...]) -> list[Array]:
        """Runs in the predict thread with a whole coalesced batch."""
        model = self.model
        assert model is not None
        out: list[Array] = []
        for method in methods:
            fast = model.forest.method(method) if model.forest is not None else None
            call = fast if fast is not None else getattr(model.estimator, method)
            result = np.asarray(call(x))
            if result.shape[:1] != x.shape[:1]:
                raise InferenceError(
                    f"{method} returned {result.shape[0] if result.ndim else 0} rows for "
                    f"{x.shape[0]} inputs"
                )
            out.append(result)
        return out

    def _observe_batch(
        self, rows: int, jobs: int, seconds: float, methods: tuple[str, ...], out: list[Array]
    ) -> None:
        m = self.metrics
        m.batch_rows.observe(rows)
        m.batch_requests.observe(jobs)
        m.predict_seconds.observe(seconds)
        if "predict" in methods and self.model is not None:
            m.observe_predictions(out[methods.index("predict")], self.model.is_classifier)

    def _validate(self, model: LoadedModel, x: Array, what: str) -> Array:
        """Shape and value checks that name the expected shape; cheap whole-array operations."""
        nf = model.n_features
        if x.ndim == 1:
            if nf == 1:
                x = x.reshape(-1, 1)
            else:
                expect = f"[N, {nf}]" if nf is not None else "[N, features]"
                raise InvalidInputError(
                    f"{what} has shape {list(x.shape)} but the model expects shape {expect}: "
                    "a list of rows, each a list of feature values"
                )
        if x.ndim != 2:
            expect = f"[N, {nf}]" if nf is not None else "[N, features]"
            raise InvalidInputError(
                f"{what} has shape {list(x.shape)} but the model expects shape {expect}"
            )
        if x.shape[0] == 0:
            raise InvalidInputError(f"{what} holds no rows")
        if nf is not None and x.shape[1] != nf:
            raise InvalidInputError(
                f"{what} has shape {list(x.shape)} but the model expects shape [N, {nf}] "
                f"({nf} features per row, got {x.shape[1]})"
            )
        if x.dtype.kind == "f":
            finite = np.isfinite(x)
            if not finite.all():
                bad = np.argwhere(~finite)[0].tolist()
                if np.isinf(x).any():
                    raise InvalidInputError(f"{what} holds an infinite value at {bad}")
                if not model.allow_nan:
                    raise InvalidInputError(
                        f"{what} holds a missing value (null/NaN) at {bad}, and this model "
                        "does not accept missing values"
                    )
        return x

    async def _infer(self, model: LoadedModel, x: Array, methods: tuple[str, ...]) -> list[Array]:
        self.metrics.request_rows.observe(x.shape[0])
        assert self._batcher is not None
        try:
            return await self._batcher.submit(x, methods)
        except ServerError:
            raise
        except _INPUT_ERRORS as exc:
            raise InvalidInputError(f"the model rejected the input: {exc}") from None
        except Exception as exc:
            log.exception("inference failed")
            raise InferenceError(f"inference failed: {type(exc).__name__}: {exc}") from None

    async def v1_predict(self, name: str, body: bytes) -> dict[str, Any]:
        model = self._require_ready(name)
        req = decode_v1(body)
        if req.records is not None:
            if model.feature_names is None:
                raise InvalidInputError(
                    "instances are objects keyed by feature name, but the model was not fitted "
                    "with feature names; send lists of values in training column order"
                )
            x = records_to_array(req.records, model.feature_names)
        else:
            assert req.instances is not None
            x = req.instances
        x = self._validate(model, x, 'field "instances"')
        proba = self.info.predict_proba_v1 and model.has_proba
        (result,) = await self._infer(model, x, ("predict_proba",) if proba else ("predict",))
        return {"predictions": result}

    def _v2_matrix(self, model: LoadedModel, inputs: list[V2Input]) -> Array:
        if len(inputs) == 1:
            return self._validate(model, inputs[0].array, f"inputs[0] ({inputs[0].name})")
        # Several inputs: one column each (KServe/MLServer's "one tensor per feature" form).
        names = [i.name for i in inputs]
        if model.feature_names is not None and set(names) == set(model.feature_names):
            by_name = {i.name: i for i in inputs}
            inputs = [by_name[n] for n in model.feature_names]
        cols = []
        for j, inp in enumerate(inputs):
            a = inp.array
            if a.ndim == 2 and a.shape[1] == 1:
                a = a[:, 0]
            if a.ndim != 1:
                raise InvalidInputError(
                    f"inputs[{j}] ({inp.name}) has shape {list(inp.array.shape)}; with several "
                    "inputs each must be one feature column of shape [N] or [N, 1]"
                )
            cols.append(a)
        if len({c.shape[0] for c in cols}) != 1:
            raise InvalidInputError("all inputs must hold the same number of rows")
        x = (
            np.column_stack(cols)
            if len({c.dtype for c in cols}) == 1
            else np.column_stack([c.astype(object) for c in cols])
        )
        return self._validate(model, x, "inputs")

    async def v2_infer(self, name: str, version: str | None, body: bytes) -> dict[str, Any]:
        model = self._require_ready(name, version)
        req = decode_v2(body)
        x = self._v2_matrix(model, req.inputs)
        requested = req.outputs or [PREDICT_OUTPUT]
        methods = tuple(dict.fromkeys(OUTPUT_METHODS[o] for o in requested))
        if "predict_proba" in methods and not model.has_proba:
            raise InvalidInputError(
                f"output {PROBA_OUTPUT!r} needs predict_proba, which "
                f"{model.estimator_class.rsplit('.', 1)[-1]} does not offer"
            )
        results = await self._infer(model, x, methods)
        by_method = dict(zip(methods, results, strict=True))
        response: dict[str, Any] = {
            "model_name": self.info.name,
            "model_version": self.info.version,
            "id": req.id if req.id is not None else "",
            "outputs": [v2_tensor(o, by_method[OUTPUT_METHODS[o]]) for o in requested],
        }
        if req.id is None:
            del response["id"]
        return response

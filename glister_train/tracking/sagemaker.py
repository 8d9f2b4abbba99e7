"""SageMaker Experiments tracking (extra ``[sagemaker]`` = ``sagemaker-core``).

Parameters once, per-epoch and per-selection metrics with ``step`` (``BatchPutMetrics``), the final model's
path as an output artifact. Inside a training job the run is ``load_run(experiment_name=, run_name=)`` with the
names passed as hyperparameters (``ModelTrainer`` has no experiment config of its own); outside, a ``Run`` is
created. Wrapped in :class:`Resilient` by ``make_tracker``, so an API failure never stops training.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..errors import UsageError

# the v3 SDK's telemetry is opted out of: a training job should not phone home
SDK_CONFIG = {"SchemaVersion": "1.0", "SageMaker": {"PythonSDK": {"Modules": {"TelemetryOptOut": True}}}}


class SageMakerTracker:
    def __init__(self, experiment_name: str, run_name: str, *, in_job: bool, default_bucket: str = ""):
        try:
            from sagemaker.core.experiments.run import Run, load_run
            from sagemaker.core.helper.session_helper import Session
        except ImportError:
            raise UsageError("--tracker sagemaker needs sagemaker-core: pip install 'glister-train[sagemaker]'") from None
        # an explicit bucket keeps the session from asking STS for the account to name one
        session = Session(default_bucket=default_bucket or "glister-train-artifacts", sagemaker_config=SDK_CONFIG)
        if in_job:
            self.run = load_run(experiment_name=experiment_name, run_name=run_name, sagemaker_session=session)
        else:
            self.run = Run(experiment_name=experiment_name, run_name=run_name, sagemaker_session=session)
        self.run.__enter__()  # every log_* call must happen inside the run's context

    def log_params(self, params: Mapping[str, Any]) -> None:
        self.run.log_parameters({k: v if isinstance(v, (int, float, str)) else str(v) for k, v in params.items()})
        self.run._trial_component.save()  # persist now, not only at close: a killed job keeps its parameters

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        for name, value in metrics.items():
            self.run.log_metric(name=name, value=value, step=step)
        # the SDK sends in batches of 10 and drops a batch whose call fails; drain now so that a failure
        # raises here, where Resilient keeps the whole call and retries it
        self.run._metrics_manager.close()

    def log_artifact(self, path: str) -> None:
        self.run.log_artifact(name=path.rsplit("/", 1)[-1], value=path)

    def close(self, status: str = "completed") -> None:
        error = None if status == "completed" else RuntimeError(f"run {status}")
        self.run.__exit__(type(error) if error else None, error, None)

    def release(self) -> None:
        """Leave the SDK's process-wide run context when close() could not be delivered: otherwise the next
        Run in this process fails as a 'nested' run."""
        from sagemaker.core.experiments._run_context import _RunContext

        if _RunContext.get_current_run() is self.run:
            _RunContext.drop_current_run()

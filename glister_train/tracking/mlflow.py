"""MLflow tracking (extra ``[mlflow]``): params, per-epoch metrics, the model as an artifact.

The default store is an embedded SQLite file (``sqlite:///mlflow.db`` in the working directory, MLflow 3's
own default); any tracking URI works otherwise, including a SageMaker managed MLflow tracking server ARN
with the ``sagemaker-mlflow`` plugin installed (``pip install sagemaker-mlflow``).
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from typing import Any

from ..errors import UsageError

STATUS = {"completed": "FINISHED", "failed": "FAILED", "interrupted": "KILLED"}


class MlflowTracker:
    def __init__(self, tracking_uri: str = "", experiment_name: str = "", run_name: str = ""):
        try:
            from mlflow.tracking import MlflowClient
        except ImportError:
            raise UsageError("--tracker mlflow needs MLflow: pip install 'glister-train[mlflow]'") from None
        self.tracking_uri = tracking_uri or "sqlite:///mlflow.db"
        # MLflow's own HTTP retries (7, backoff to about 4 minutes a call) would hold the delivery thread for
        # minutes on a dead server; the Resilient wrapper retries instead. A user's own settings win.
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "15")
        self.client = MlflowClient(tracking_uri=self.tracking_uri)
        name = experiment_name or "glister-train"
        experiment = self.client.get_experiment_by_name(name)
        experiment_id = experiment.experiment_id if experiment else self.client.create_experiment(name)
        self.run_id = self.client.create_run(experiment_id, run_name=run_name or None).info.run_id

    def log_params(self, params: Mapping[str, Any]) -> None:
        from mlflow.entities import Param

        items = [Param(k, str(v)[:6000]) for k, v in params.items()]
        for start in range(0, len(items), 100):  # MLflow takes at most 100 params per batch
            self.client.log_batch(self.run_id, params=items[start : start + 100])

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        self.client.log_batch(self.run_id, metrics=[Metric(k, float(v), now, step) for k, v in metrics.items()])

    def log_artifact(self, path: str) -> None:
        self.client.log_artifact(self.run_id, path)

    def close(self, status: str = "completed") -> None:
        self.client.set_terminated(self.run_id, status=STATUS.get(status, "FAILED"))

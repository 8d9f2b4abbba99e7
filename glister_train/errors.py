"""Errors the command line reports as a one-line message and a non-zero exit, without a traceback."""


class UsageError(Exception):
    """Bad input from the user: the message names the value and how to fix it (exit code 2)."""


class ConfigError(UsageError, ValueError):
    """A configuration key or value that cannot be used."""


class DataError(UsageError):
    """A dataset that is missing, empty or inconsistent."""


class CheckpointError(UsageError):
    """A checkpoint that cannot be resumed from."""


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite (exit code 1; the last good checkpoint is kept)."""

    def __init__(self, epoch: int, step: int, loss: float):
        super().__init__(
            f"loss is {loss} at epoch {epoch}, step {step}; training stopped. The last good checkpoint is kept: "
            "lower the learning rate (--lr) or use --set runtime.precision=fp32, then start a new run"
        )
        self.epoch, self.step, self.loss = epoch, step, loss


class StageFailed(RuntimeError):
    """A stage's work could not be completed (a remote job failed, say): exit code 1, the message says why."""

"""Errors the command line reports as a one-line message and a non-zero exit, without a traceback."""


class UsageError(Exception):
    """Bad input from the user: the message names the value and how to fix it (exit code 2)."""


class ConfigError(UsageError, ValueError):
    """A configuration key or value that cannot be used."""


class DataError(UsageError):
    """A dataset that is missing, empty or inconsistent."""


class ModelFileError(UsageError):
    """A model file that is missing, unreadable, refused (pickled code) or not a glister_train model."""


class CheckpointError(UsageError):
    """A checkpoint that cannot be resumed from."""


class TrainingDiverged(RuntimeError):
    """The loss (or the numbers a selection works on) became NaN or infinite: exit code 1."""

    def __init__(self, epoch: int, step: int, loss: float, what: str = "loss"):
        super().__init__(epoch, step, loss, what)
        self.epoch, self.step, self.loss, self.what = epoch, step, loss, what
        self.checkpoint_epoch: int | None = None  # set by the loop: the epoch its last good checkpoint holds

    def __str__(self) -> str:
        where = f"at epoch {self.epoch}, step {self.step}" if self.step else f"at epoch {self.epoch}"
        kept = (f"the checkpoint after epoch {self.checkpoint_epoch} is kept" if self.checkpoint_epoch
                else "no checkpoint had been written yet")
        return (f"{self.what} is {self.loss} {where}; training stopped ({kept}). Lower the learning rate (--lr) "
                "or use --set runtime.precision=fp32, then start a new run")


class NonFiniteSelection(ValueError):
    """A selector was given NaN or infinite features, logits or gains: the model has diverged."""


class StageFailed(RuntimeError):
    """A stage's work could not be completed (a remote job failed, say): exit code 1, the message says why."""


class Terminated(KeyboardInterrupt):
    """SIGTERM (spot reclaim, docker stop, Kubernetes): stop like Ctrl-C, keep the last checkpoint, exit 143."""


class DiskFull(OSError):
    """The disk filled while a file was written: exit code 1 with one line (the last checkpoint is intact)."""

    def __init__(self, path: str, device: str):
        super().__init__(28, f"no space left on {device} while writing {path}; free space and run again with --resume")

    def __str__(self) -> str:
        return self.strerror

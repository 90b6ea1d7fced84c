"""The few exceptions trainwell raises on purpose.

The command line maps them to exit codes: a user error (bad option, bad data,
bad config) is exit 2 with one line; a failure after training started is exit 1.
"""


class TrainwellError(Exception):
    """Base class: every error trainwell raises deliberately."""

    exit_code = 1


class ConfigError(TrainwellError, ValueError):
    """An invalid option, config key or value (exit 2)."""

    exit_code = 2


class DataError(TrainwellError, ValueError):
    """Input data that cannot be trained on as given (exit 2)."""

    exit_code = 2


class CheckpointError(TrainwellError):
    """A checkpoint that cannot be written, or must not be loaded."""

    exit_code = 1


class TrainingError(TrainwellError):
    """Training started but could not go on (exit 1)."""

    exit_code = 1


class Interrupted(TrainwellError):
    """SIGTERM or Ctrl-C stopped ``fit()`` after a whole step; a checkpoint was written (exit 0)."""

    exit_code = 0

    def __init__(self, signal_name: str, checkpoint: object = None):
        where = f"checkpoint saved to {checkpoint}" if checkpoint else "no run_dir, so no checkpoint was written"
        super().__init__(f"interrupted by {signal_name} after a complete step; {where}")
        self.checkpoint = checkpoint

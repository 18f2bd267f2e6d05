"""User-facing errors: the CLI prints their message on one line and exits non-zero."""


class MosnasError(Exception):
    """Base class for every error caused by the user's input (config, files, archs, budgets)."""


class ConfigError(MosnasError):
    pass


class ArchError(MosnasError):
    pass


class DataError(MosnasError):
    pass


class CheckpointError(MosnasError):
    pass


class TrainingError(MosnasError):
    pass


class BudgetError(MosnasError):
    pass


class PredictorError(MosnasError):
    pass


class Interrupted(TrainingError):
    """Work stopped by a signal (Ctrl-C, SIGTERM) after saving what it had; the command line exits
    128 + the signal's number (130 for Ctrl-C, 143 for SIGTERM), as a shell reports a killed command."""

    def __init__(self, message: str, signal_name: str = "SIGINT"):
        super().__init__(f"{message}; to continue, run the same command again (mosnas train: with --resume)")
        self.exit_code = 143 if signal_name == "SIGTERM" else 130

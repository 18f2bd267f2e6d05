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

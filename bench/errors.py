"""Errors that end in a clear one-line message and a non-zero exit, never a stack trace."""


class BenchError(Exception):
    """A user-facing error. The CLI prints `error: <message>` and exits with status 2."""


class UnknownName(BenchError):
    def __init__(self, kind: str, name: str, valid):
        valid = sorted(valid)
        super().__init__(f"unknown {kind} {name!r}; valid {kind}s: {', '.join(valid)}")
        self.kind, self.name, self.valid = kind, name, valid


class DataError(BenchError):
    """A missing or malformed data file; the message names the file (and row)."""


class ModelUnavailable(BenchError):
    """A model that cannot be loaded here; the message says how to provide it."""


class RunConflict(BenchError):
    """The output directory already holds a different run."""


class RunLocked(RunConflict):
    """Another bench run is writing the output directory right now."""


class IdenticalSubject(BenchError):
    """A debiaser returned a subject identical to its input."""


class TrainingDiverged(BenchError):
    """A loss became NaN or infinite."""

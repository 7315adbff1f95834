"""The error hierarchy. The core raises these; only the CLI maps them to exit codes and text."""

from __future__ import annotations

# Exit codes, documented in `deploy --help` and README.
EXIT_OK = 0
EXIT_FAILED = 1
EXIT_BAD_INPUT = 2
EXIT_LOCK_HELD = 3
EXIT_INTERRUPTED = 130


class DeployerError(Exception):
    """Base class: an operation failed (exit 1). `str()` is what the user sees."""

    exit_code = EXIT_FAILED


class ConfigError(DeployerError):
    """Bad input: env file, stack file, arguments. Carries every problem found at once (exit 2)."""

    exit_code = EXIT_BAD_INPUT

    def __init__(self, problems: str | list[str] | tuple[str, ...]):
        self.problems = (problems,) if isinstance(problems, str) else tuple(problems)
        super().__init__("\n".join(self.problems))


class LockHeldError(DeployerError):
    """Someone else holds a lock (state lock or host deploy lock) (exit 3)."""

    exit_code = EXIT_LOCK_HELD

    def __init__(self, what: str, holder: str):
        self.what = what
        self.holder = holder
        super().__init__(f"{what} is locked by {holder}")


class EngineError(DeployerError):
    """Terraform / OpenTofu failed."""


class AwsError(DeployerError):
    """An AWS call failed in a way the user must act on."""


class HostError(DeployerError):
    """A host step failed (SSH, remote command, health check)."""


class Interrupted(DeployerError):
    """Ctrl-C: the running step was stopped cleanly (exit 130)."""

    exit_code = EXIT_INTERRUPTED

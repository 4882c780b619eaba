"""The project's one exception tree; tasks translate it into ``invoke.Exit`` once, at the top."""

from __future__ import annotations


class BakeryError(Exception):
    """Base of every error the project raises on purpose. ``exit_code`` is what the CLI exits with."""

    exit_code = 1

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class ConfigError(BakeryError):
    """Invalid configuration or user input: one line naming the file/key/value and the fix."""

    exit_code = 2


class RenderError(BakeryError):
    """A template failed to render (names the template and line)."""

    exit_code = 2


class LintError(BakeryError):
    """Lint found errors in osquery, Fluentd or rsyslog configuration."""

    exit_code = 2


class ToolMissingError(BakeryError):
    """A required external program is not installed."""

    exit_code = 3


class CommandError(BakeryError):
    """An external command failed: carries the argv, exit code and the tail of its output."""

    def __init__(self, argv: list[str], returncode: int | None, output_tail: str, what: str = "") -> None:
        import shlex

        self.argv = list(argv)
        self.returncode = returncode
        self.output_tail = output_tail
        status = "timed out" if returncode is None else f"exited {returncode}"
        head = what or shlex.join(self.argv)
        tail = f"\n{output_tail}" if output_tail else ""
        super().__init__(f"{head} {status}{tail}")


class PackerError(CommandError):
    """``packer`` failed (validate, fmt or build)."""


class VMError(BakeryError):
    """A local VM could not be started, reached or stopped."""


class ImageTestError(BakeryError):
    """The image test suite failed: nothing is published."""


class RegistryError(BakeryError):
    """A family/registry operation was refused or failed (local registry or GCE)."""


class ImageNotFoundError(RegistryError):
    """No image of that name in the registry. Where the user named the image (promote, diff) the caller
    turns it into a ConfigError with the fix."""


class CorruptRecordError(RegistryError):
    """A record the bakery reads back (a local registry's image.json) is broken: bad input, exit 2."""

    exit_code = 2


class ProvenanceError(BakeryError):
    """A manifest is missing, unreadable or not ours (``invoke diff``): bad input."""

    exit_code = 2


class NightlyFailed(BakeryError):
    """A nightly run finished and at least one variant failed (the report says which and why)."""


class Interrupted(BakeryError):
    """SIGINT/SIGTERM arrived; cleanup ran. exit_code is 128 + signal number."""

    def __init__(self, signum: int) -> None:
        import signal

        super().__init__(f"interrupted by {signal.Signals(signum).name}; cleaned up")
        self.exit_code = 128 + signum

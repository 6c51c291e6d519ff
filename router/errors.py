"""One error tree for crmsync.

Expected errors carry a message meant for a person: the CLI prints ``str(err)`` as a
single line and exits with the error's ``exit_code``; no traceback.
"""

from __future__ import annotations

# Exit codes are a contract for scripts and supervisors (dramatiq style).
EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_BROKER = 3
EXIT_CONFIG = 4
EXIT_STATE = 5


class CrmsyncError(Exception):
    """Root of every error crmsync raises on purpose."""

    exit_code = EXIT_ERROR


class ConfigError(CrmsyncError, ValueError):
    """A configuration file or value is wrong; the message names the key and file."""

    exit_code = EXIT_CONFIG


class BrokerUnavailable(CrmsyncError, ConnectionError):
    """RabbitMQ cannot be reached or refused us."""

    exit_code = EXIT_BROKER


class TopologyMismatch(CrmsyncError):
    """A queue or exchange exists with arguments other than the ones crmsync declares."""

    exit_code = EXIT_BROKER


class EntityMissing(CrmsyncError, LookupError):
    """An exchange or queue crmsync needs does not exist on this broker/vhost."""

    exit_code = EXIT_BROKER


class AccessRefused(CrmsyncError):
    """The broker refused an operation on a resource (403): the user lacks the
    permission, or another consumer holds the queue exclusively."""

    exit_code = EXIT_BROKER


class PublishFailed(CrmsyncError):
    """The broker nacked or returned (unroutable) a publish."""


class Unroutable(PublishFailed):
    """The broker returned a mandatory publish: no queue is bound for its routing key."""


class DecodeError(CrmsyncError, ValueError):
    """A message body is not a valid crmsync event. Keeps the raw bytes for the invalid queue."""

    def __init__(self, reason: str, detail: str, raw: bytes) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail
        self.raw = raw


class StateError(CrmsyncError):
    """The state store is unusable (schema, epoch, corruption)."""

    exit_code = EXIT_STATE


class RegistrationRefused(CrmsyncError):
    """The router refused an adapter's registration (e.g. a stale actor epoch)."""


class RouterUnavailable(CrmsyncError):
    """No router answered a control request in time."""

    exit_code = EXIT_BROKER


class WriteError(CrmsyncError):
    """An adapter could not write a delivery into its CRM.

    The message goes into the DLQ's ``x-crmsync-error`` header beside the record (a
    database's own text may quote values: ``Key (email)=(...)``). ``log_text`` is what
    logs show instead when the message may hold customer values; absent, the message is
    value-free already.
    """

    def __init__(self, message: str, *, log_text: str | None = None) -> None:
        super().__init__(message)
        self.log_text = message if log_text is None else log_text


class TransientWriteError(WriteError):
    """Worth retrying: network, timeout, lock wait, rate limit, 5xx."""


class PermanentWriteError(WriteError):
    """Retrying cannot help: constraint or validation failure, 4xx."""

"""The adapter kit: what a new CRM integration implements, and the suite that checks it.

**The contract** (:class:`adapters.base.Adapter`; for a CRM that is not a database the
SDK can join, subclass :class:`adapters.linkstore.LinkStoreAdapter`, which keeps links
in SQLite beside the state file and hands every method a transaction on it):

* required: ``entities``, ``read_changes`` (rows changed since a cursor, keyset-paged),
  ``read_record``, ``write_record`` (insert or conditional update, returning the row
  read back), ``delete_record``;
* optional, with defaults: ``horizon`` (the CRM's clock: without it capture keeps no
  cursor and re-reads everything each poll), ``soft_deletes`` / ``list_ids`` /
  ``existing_ids`` (hard deletes found by comparing ids), ``insert_many`` and
  ``read_records`` (bulk versions), ``list_all`` / ``read_page`` / ``count_rows``
  (a migration source), ``snapshot``, ``close``.

Raise :class:`~router.errors.TransientWriteError` for what a retry may fix (network,
timeouts, locks, 429/5xx) and :class:`~router.errors.PermanentWriteError` for what it
cannot (a value refused, 4xx), :class:`~adapters.base.VersionMismatch` when a
conditional write finds the record changed.

**The conformance suite** (:data:`CHECKS`) drives an adapter through the SDK's
:class:`~adapters.engine.SyncEngine`, no broker needed, with a *CRM driver*
(:mod:`adapters.kit.driver`) making a user's changes outside the SDK::

    crmsync adapter conformance config/adapters/mine.toml [--driver pkg.mod:Factory]

prints one line per check and exits non-zero when one fails. In a test suite:
``with open_subject(config, tmp_path) as s: CHECKS["capture_insert"](s)``.
"""

from adapters.kit.checks import CHECKS, CheckFailed
from adapters.kit.driver import DRIVERS, CrmDriver, KitSetupError
from adapters.kit.subject import Subject, open_subject

__all__ = [
    "CHECKS",
    "DRIVERS",
    "CheckFailed",
    "CrmDriver",
    "KitSetupError",
    "Subject",
    "open_subject",
]

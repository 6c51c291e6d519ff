"""``crmsync doctor``: read-only checks of a deployment, one verdict per check.

The pure parts (verdicts, judging what was found, formatting, the exit code) are in
:mod:`router.doctor.verdicts` and :mod:`router.doctor.judge`; the probes that look at the
broker, the CRM databases and the state stores are in the ``*_probe`` modules, and
:mod:`router.doctor.run` runs them in order. Nothing here declares, publishes or writes
customer data: the state-store probe inserts one row into the store's own meta table
inside a transaction it rolls back.
"""

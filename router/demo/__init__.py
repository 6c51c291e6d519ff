"""``crmsync demo``: the whole system on this machine, with demo CRMs on embedded SQLite.

:mod:`.run` starts RabbitMQ's vhost, the router and three adapters as processes and
shows them converge; :mod:`.crms` holds the three demo CRMs' schemas and users.
"""

from router.demo.run import Fleet, run_demo

__all__ = ["Fleet", "run_demo"]

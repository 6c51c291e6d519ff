"""Column types that keep their meaning on SQLite, PostgreSQL and MariaDB alike.

MariaDB turns ``Float`` into a 4-byte FLOAT (epoch timestamps off by minutes) and
``LargeBinary`` into a 64 KB BLOB; these say what crmsync means everywhere.
"""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.dialects import mysql

Timestamp = sa.Double
Blob = sa.LargeBinary().with_variant(mysql.LONGBLOB(), "mysql", "mariadb")

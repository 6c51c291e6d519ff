"""Real CRMs' tables, laid out as the CRM lays them out, and rows written the way its
application writes them (timestamps set by the writer, no triggers).

SuiteCRM 7 (MariaDB): the columns of ``contacts``, ``accounts``, ``email_addresses``,
``email_addr_bean_rel`` and ``accounts_contacts`` the sync touches, with SuiteCRM's types
(``char(36)`` ids, second-precision ``datetime`` in UTC, ``tinyint(1)`` flags), plus a few
it does not, so the adapter is seen to leave them alone. Odoo (PostgreSQL): ``res_partner``
with ``write_date`` stamped with the transaction's start, as Odoo's ORM stamps it.
"""

from __future__ import annotations

import uuid
from typing import Any

import sqlalchemy as sa

SUITECRM_DDL = [
    """CREATE TABLE accounts (
        id char(36) NOT NULL PRIMARY KEY, name varchar(150) DEFAULT NULL,
        date_entered datetime DEFAULT NULL, date_modified datetime DEFAULT NULL,
        modified_user_id char(36) DEFAULT NULL, created_by char(36) DEFAULT NULL,
        description text, deleted tinyint(1) DEFAULT 0, assigned_user_id char(36) DEFAULT NULL,
        account_type varchar(50) DEFAULT NULL, industry varchar(50) DEFAULT NULL,
        annual_revenue varchar(100) DEFAULT NULL, phone_fax varchar(100) DEFAULT NULL,
        billing_address_street varchar(150) DEFAULT NULL, phone_office varchar(100) DEFAULT NULL,
        website varchar(255) DEFAULT NULL, parent_id char(36) DEFAULT NULL,
        KEY idx_accnt_id_del (id, deleted), KEY idx_accnt_name_del (name, deleted)
    ) CHARACTER SET utf8mb4""",
    """CREATE TABLE contacts (
        id char(36) NOT NULL PRIMARY KEY, date_entered datetime DEFAULT NULL,
        date_modified datetime DEFAULT NULL, modified_user_id char(36) DEFAULT NULL,
        created_by char(36) DEFAULT NULL, description text, deleted tinyint(1) DEFAULT 0,
        assigned_user_id char(36) DEFAULT NULL, salutation varchar(255) DEFAULT NULL,
        first_name varchar(100) DEFAULT NULL, last_name varchar(100) DEFAULT NULL,
        title varchar(100) DEFAULT NULL, department varchar(255) DEFAULT NULL,
        do_not_call tinyint(1) DEFAULT 0, phone_home varchar(100) DEFAULT NULL,
        phone_mobile varchar(100) DEFAULT NULL, phone_work varchar(100) DEFAULT NULL,
        primary_address_street varchar(150) DEFAULT NULL,
        primary_address_city varchar(100) DEFAULT NULL, lead_source varchar(255) DEFAULT NULL,
        reports_to_id char(36) DEFAULT NULL, birthdate date DEFAULT NULL,
        KEY idx_cont_last_first (last_name, first_name, deleted),
        KEY idx_contacts_del_last (deleted, last_name)
    ) CHARACTER SET utf8mb4""",
    """CREATE TABLE email_addresses (
        id char(36) NOT NULL PRIMARY KEY, email_address varchar(255) DEFAULT NULL,
        email_address_caps varchar(255) DEFAULT NULL, invalid_email tinyint(1) DEFAULT 0,
        opt_out tinyint(1) DEFAULT 0, date_created datetime DEFAULT NULL,
        date_modified datetime DEFAULT NULL, deleted tinyint(1) DEFAULT 0,
        KEY idx_ea_caps_opt_out_invalid (email_address_caps, opt_out, invalid_email),
        KEY idx_ea_opt_out_invalid (email_address, opt_out, invalid_email)
    ) CHARACTER SET utf8mb4""",
    """CREATE TABLE email_addr_bean_rel (
        id char(36) NOT NULL PRIMARY KEY, email_address_id char(36) NOT NULL,
        bean_id char(36) DEFAULT NULL, bean_module varchar(100) DEFAULT NULL,
        primary_address tinyint(1) DEFAULT 0, reply_to_address tinyint(1) DEFAULT 0,
        date_created datetime DEFAULT NULL, date_modified datetime DEFAULT NULL,
        deleted tinyint(1) DEFAULT 0,
        KEY idx_email_address_id (email_address_id), KEY idx_bean_id (bean_id, bean_module)
    ) CHARACTER SET utf8mb4""",
    """CREATE TABLE accounts_contacts (
        id varchar(36) NOT NULL PRIMARY KEY, contact_id varchar(36) DEFAULT NULL,
        account_id varchar(36) DEFAULT NULL, date_modified datetime DEFAULT NULL,
        deleted tinyint(1) NOT NULL DEFAULT 0,
        KEY idx_account_contact (account_id, contact_id),
        KEY idx_contid_del_accid (contact_id, deleted, account_id)
    ) CHARACTER SET utf8mb4""",
]

ODOO_DDL = [
    """CREATE TABLE res_partner (
        id serial PRIMARY KEY, name varchar, display_name varchar, ref varchar,
        create_date timestamp without time zone, write_date timestamp without time zone,
        parent_id integer REFERENCES res_partner(id) ON DELETE SET NULL,
        commercial_partner_id integer, lang varchar, website varchar, comment text,
        active boolean DEFAULT true, type varchar DEFAULT 'contact', street varchar,
        street2 varchar, zip varchar, city varchar, email varchar, phone varchar,
        mobile varchar, is_company boolean DEFAULT false, function varchar
    )""",
    "CREATE INDEX res_partner_parent_id_index ON res_partner (parent_id)",
]

# Odoo's ORM stamps every row of a transaction with the transaction's start, in UTC.
ODOO_NOW = sa.text("(now() at time zone 'UTC')")
# SuiteCRM's PHP stamps UTC, whole seconds.
SUITE_NOW = sa.text("UTC_TIMESTAMP()")


def create(engine: sa.Engine, ddl: list[str]) -> None:
    with engine.begin() as conn:
        for statement in ddl:
            conn.exec_driver_sql(statement)


def new_id() -> str:
    return str(uuid.uuid4())


class SuiteApp:
    """Writes as SuiteCRM's beans save: every save stamps date_modified; a delete sets
    deleted = 1; the primary email is an email_addresses row plus its relation row."""

    def __init__(self, engine: sa.Engine) -> None:
        self.engine = engine

    def _run(self, sql: str, **params: Any) -> None:
        with self.engine.begin() as conn:
            conn.execute(sa.text(sql), params)

    def add_account(self, name: str, **cols: Any) -> str:
        account = new_id()
        self._row("accounts", id=account, name=name, **cols)
        return account

    def _row(self, table: str, **cols: Any) -> None:
        names = ", ".join(cols)
        marks = ", ".join(f":{c}" for c in cols)
        self._run(
            f"INSERT INTO {table} ({names}, date_entered, date_modified, deleted) "
            f"VALUES ({marks}, UTC_TIMESTAMP(), UTC_TIMESTAMP(), 0)",
            **cols,
        )

    def add_contact(
        self,
        first: str,
        last: str,
        email: str | None = None,
        account: str | None = None,
        **cols: Any,
    ) -> str:
        contact = new_id()
        self._row("contacts", id=contact, first_name=first, last_name=last, **cols)
        if email is not None:
            self.set_email(contact, email)
        if account is not None:
            self._run(
                "INSERT INTO accounts_contacts (id, contact_id, account_id, date_modified, "
                "deleted) VALUES (:id, :c, :a, UTC_TIMESTAMP(), 0)",
                id=new_id(),
                c=contact,
                a=account,
            )
        return contact

    def set_email(self, contact: str, email: str) -> None:
        """SuiteCRM's SugarEmailAddress::save: reuse the address row of the same caps,
        else add one; the old primary relation is marked deleted, a new one added."""
        with self.engine.begin() as conn:
            found = conn.execute(
                sa.text(
                    "SELECT id FROM email_addresses WHERE email_address_caps = :c AND deleted = 0"
                ),
                {"c": email.upper()},
            ).scalar()
            if found is None:
                found = new_id()
                conn.execute(
                    sa.text(
                        "INSERT INTO email_addresses (id, email_address, email_address_caps, "
                        "date_created, date_modified, deleted) VALUES (:id, :e, :c, "
                        "UTC_TIMESTAMP(), UTC_TIMESTAMP(), 0)"
                    ),
                    {"id": found, "e": email, "c": email.upper()},
                )
            conn.execute(
                sa.text(
                    "UPDATE email_addr_bean_rel SET deleted = 1, date_modified = UTC_TIMESTAMP() "
                    "WHERE bean_id = :b AND bean_module = 'Contacts' AND deleted = 0"
                ),
                {"b": contact},
            )
            conn.execute(
                sa.text(
                    "INSERT INTO email_addr_bean_rel (id, email_address_id, bean_id, "
                    "bean_module, primary_address, date_created, date_modified, deleted) "
                    "VALUES (:id, :ea, :b, 'Contacts', 1, UTC_TIMESTAMP(), UTC_TIMESTAMP(), 0)"
                ),
                {"id": new_id(), "ea": found, "b": contact},
            )

    def edit(self, table: str, row_id: str, **cols: Any) -> None:
        sets = ", ".join(f"{c} = :{c}" for c in cols)
        self._run(
            f"UPDATE {table} SET {sets}, date_modified = UTC_TIMESTAMP() WHERE id = :row_id",
            row_id=row_id,
            **cols,
        )

    def delete(self, table: str, row_id: str) -> None:
        self._run(
            f"UPDATE {table} SET deleted = 1, date_modified = UTC_TIMESTAMP() WHERE id = :i",
            i=row_id,
        )

    def rows(self, sql: str, **params: Any) -> list[dict[str, Any]]:
        with self.engine.connect() as conn:
            return [dict(r) for r in conn.execute(sa.text(sql), params).mappings()]

    def email_of(self, contact: str) -> str | None:
        found = self.rows(
            "SELECT ea.email_address FROM email_addresses ea JOIN email_addr_bean_rel r "
            "ON r.email_address_id = ea.id WHERE r.bean_id = :c AND r.bean_module = 'Contacts' "
            "AND r.primary_address = 1 AND r.deleted = 0 AND ea.deleted = 0",
            c=contact,
        )
        assert len(found) <= 1, "one primary address per contact"
        return found[0]["email_address"] if found else None

    def account_of(self, contact: str) -> str | None:
        found = self.rows(
            "SELECT account_id FROM accounts_contacts WHERE contact_id = :c AND deleted = 0",
            c=contact,
        )
        assert len(found) <= 1, "one live account link per contact"
        return found[0]["account_id"] if found else None


class OdooApp:
    """Writes as Odoo's ORM does: write_date = the transaction's start for every row the
    transaction writes; unlink is a DELETE; archiving sets active = false."""

    def __init__(self, engine: sa.Engine) -> None:
        self.engine = engine

    def add(
        self, name: str, *, company: bool = False, parent: int | None = None, **cols: Any
    ) -> int:
        cols.update(name=name, is_company=company, parent_id=parent)
        names = ", ".join(cols)
        marks = ", ".join(f":{c}" for c in cols)
        with self.engine.begin() as conn:
            return int(
                conn.execute(
                    sa.text(
                        f"INSERT INTO res_partner ({names}, create_date, write_date) VALUES "
                        f"({marks}, (now() at time zone 'UTC'), (now() at time zone 'UTC')) "
                        "RETURNING id"
                    ),
                    cols,
                ).scalar_one()
            )

    def write(self, partner: int, **cols: Any) -> None:
        with self.engine.begin() as conn:
            self._write(conn, partner, **cols)

    @staticmethod
    def _write(conn: sa.Connection, partner: int, **cols: Any) -> None:
        sets = ", ".join(f"{c} = :{c}" for c in cols)
        conn.execute(
            sa.text(
                f"UPDATE res_partner SET {sets}, write_date = (now() at time zone 'UTC') "
                "WHERE id = :partner_id"
            ),
            {"partner_id": partner, **cols},
        )

    def write_company_address(self, company: int, street: str, city: str) -> list[int]:
        """res.partner's address sync: the company's address goes to every child
        contact in the same transaction (so one stamp for all). Returns the children."""
        with self.engine.begin() as conn:
            self._write(conn, company, street=street, city=city)
            children = [
                int(r[0])
                for r in conn.execute(
                    sa.text("SELECT id FROM res_partner WHERE parent_id = :p ORDER BY id"),
                    {"p": company},
                )
            ]
            for child in children:
                self._write(conn, child, street=street, city=city)
        return children

    def unlink(self, partner: int) -> None:
        with self.engine.begin() as conn:
            conn.execute(sa.text("DELETE FROM res_partner WHERE id = :p"), {"p": partner})

    def get(self, partner: int) -> dict[str, Any] | None:
        with self.engine.connect() as conn:
            r = (
                conn.execute(sa.text("SELECT * FROM res_partner WHERE id = :p"), {"p": partner})
                .mappings()
                .first()
            )
        return dict(r) if r else None

    def find(self, **cols: Any) -> list[dict[str, Any]]:
        where = " AND ".join(f"{c} = :{c}" for c in cols) or "true"
        with self.engine.connect() as conn:
            return [
                dict(r)
                for r in conn.execute(
                    sa.text(f"SELECT * FROM res_partner WHERE {where} ORDER BY id"), cols
                ).mappings()
            ]

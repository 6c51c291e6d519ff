"""The contacts store behind the fake HubSpot server: values in, values out, no HTTP.

Behaviour follows HubSpot's CRM v3 documentation (and issue 12's facts):
* every property value is returned as a string; `hs_object_id`, `createdate` and
  `lastmodifieddate` are read-only and set by the store (dates as ISO 8601 with ms);
* `email` is unique case-insensitively among live contacts; an archived contact frees it;
* search reads an index that lags writes by `lag` seconds, so a search can return the
  old version of a record, or miss it; archived contacts are never in the index.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
READ_ONLY = frozenset({"hs_object_id", "createdate", "lastmodifieddate"})
DEFAULT_PROPERTIES = ("firstname", "lastname", "email")
# Numeric filters on these compare epoch milliseconds, as the search docs say.
DATE_PROPERTIES = frozenset({"createdate", "lastmodifieddate"})


class ApiError(Exception):
    """An error HubSpot reports with a JSON body (`status`, `message`, `category`)."""

    def __init__(
        self, status: int, category: str, message: str, context: Mapping[str, Any] | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.category = category
        self.message = message
        self.context = dict(context or {})

    def body(self, correlation_id: str) -> dict[str, Any]:
        out: dict[str, Any] = {
            "status": "error",
            "message": self.message,
            "correlationId": correlation_id,
            "category": self.category,
        }
        if self.context:
            out["context"] = self.context
        return out


def validation(message: str) -> ApiError:
    return ApiError(400, "VALIDATION_ERROR", message)


def iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%S.") + (
        f"{ms % 1000:03d}Z"
    )


@dataclass
class Contact:
    id: str
    properties: dict[str, str]
    created_ms: int
    updated_ms: int
    archived: bool = False

    def copy(self) -> Contact:
        return dataclasses.replace(self, properties=dict(self.properties))

    def all_properties(self) -> dict[str, str]:
        return {
            **self.properties,
            "hs_object_id": self.id,
            "createdate": iso(self.created_ms),
            "lastmodifieddate": iso(self.updated_ms),
        }

    def render(self, wanted: Iterable[str] | None) -> dict[str, Any]:
        """The v3 object shape; requested properties without a value come back as null."""
        props = self.all_properties()
        names = list(wanted) if wanted else list(DEFAULT_PROPERTIES)
        names += [n for n in sorted(READ_ONLY) if n not in names]
        return {
            "id": self.id,
            "properties": {n: props.get(n) for n in names},
            "createdAt": iso(self.created_ms),
            "updatedAt": iso(self.updated_ms),
            "archived": self.archived,
            **({"archivedAt": iso(self.updated_ms)} if self.archived else {}),
        }


@dataclass
class Store:
    """All contacts plus the lagging search index; callers hold the server's lock."""

    clock: Callable[[], float]
    lag: float = 0.0
    contacts: dict[str, Contact] = field(default_factory=dict)
    # id -> versions as (visible from, copy or None when not searchable), oldest first.
    index: dict[str, list[tuple[float, Contact | None]]] = field(default_factory=dict)
    emails: dict[str, str] = field(default_factory=dict)  # lower-cased email -> live id
    next_id: int = 1001
    # Results one search query may page through (HubSpot: 10,000). Tests of the
    # re-anchoring logic lower it, to cross it with fewer contacts.
    search_cap: int = 10_000
    # While a batch runs all-or-nothing: id -> (copy before the batch or None, index length).
    _journal: dict[str, tuple[Contact | None, int]] | None = None

    def now_ms(self) -> int:
        return int(self.clock() * 1000)

    # -- lookups --------------------------------------------------------------
    def live(self, contact_id: str) -> Contact | None:
        c = self.contacts.get(contact_id)
        return None if c is None or c.archived else c

    def by_email(self, email: str) -> Contact | None:
        found = self.emails.get(email.strip().lower())
        return None if found is None else self.live(found)

    def _index_email(self, c: Contact, old: str | None) -> None:
        if old:
            self.emails.pop(old.strip().lower(), None)
        email = c.properties.get("email")
        if email and not c.archived:
            self.emails[email.strip().lower()] = c.id

    def find(self, ident: str, id_property: str | None) -> Contact | None:
        if id_property in (None, "hs_object_id"):
            return self.live(ident)
        if id_property == "email":
            return self.by_email(ident)
        raise validation(f"Property {id_property!r} is not a unique identifier property")

    # -- all-or-nothing batches ------------------------------------------------
    def begin(self) -> None:
        self._journal = {}

    def commit(self) -> None:
        self._journal = None

    def rollback(self, next_id: int) -> None:
        journal, self._journal = self._journal or {}, None
        for cid, (before, index_len) in journal.items():
            now = self.contacts.pop(cid, None)
            if now is not None:
                self._index_email(
                    dataclasses.replace(now, archived=True), now.properties.get("email")
                )
            if before is not None:
                self.contacts[cid] = before
                self._index_email(before, None)
            del self.index.setdefault(cid, [])[index_len:]
        self.next_id = next_id

    def _touch(self, cid: str) -> None:
        if self._journal is None or cid in self._journal:
            return
        c = self.contacts.get(cid)
        before = None if c is None else c.copy()
        self._journal[cid] = (before, len(self.index.get(cid, [])))

    # -- writes ---------------------------------------------------------------
    def clean(self, properties: Any) -> dict[str, str]:
        if not isinstance(properties, dict):
            raise validation("properties must be an object")
        out: dict[str, str] = {}
        for name, value in properties.items():
            if name in READ_ONLY:
                raise validation(f"Property {name!r} is read-only")
            if isinstance(value, bool):
                out[name] = "true" if value else "false"
            elif isinstance(value, str | int | float):
                out[name] = str(value)
            else:
                raise validation(f"Property values must be strings, numbers or booleans: {name}")
        return out

    def _check_email(self, props: Mapping[str, str], self_id: str | None) -> None:
        email = props.get("email")
        if not email:
            return
        if not EMAIL.match(email):
            # HubSpot checks the address's syntax: 400 "Property values were not valid"
            # with the INVALID_EMAIL error per property.
            raise validation("Property values were not valid: INVALID_EMAIL (email)")
        other = self.by_email(email)
        if other is not None and other.id != self_id:
            raise ApiError(
                409,
                "CONFLICT",
                f"Contact already exists. Existing ID: {other.id}",
                {"existingId": [other.id]},
            )

    def _reindex(self, c: Contact, at_ms: int) -> None:
        visible = at_ms / 1000 + self.lag
        versions = self.index.setdefault(c.id, [])
        versions.append((visible, None if c.archived else c.copy()))

    def create(self, properties: Any, at_ms: int | None = None) -> Contact:
        props = self.clean(properties)
        self._check_email(props, None)
        ms = self.now_ms() if at_ms is None else at_ms
        c = Contact(str(self.next_id), props, ms, ms)
        self.next_id += 1
        self._touch(c.id)
        self.contacts[c.id] = c
        self._index_email(c, None)
        self._reindex(c, ms)
        return c

    def update(self, c: Contact, properties: Any) -> Contact:
        props = self.clean(properties)
        self._check_email({**c.properties, **props}, c.id)
        self._touch(c.id)
        old = c.properties.get("email")
        c.properties.update(props)
        # Clearing a property by passing an empty string, as the docs allow.
        c.properties = {k: v for k, v in c.properties.items() if v != ""}
        self._index_email(c, old)
        c.updated_ms = max(self.now_ms(), c.updated_ms)
        self._reindex(c, c.updated_ms)
        return c

    def archive(self, contact_id: str) -> None:
        c = self.live(contact_id)
        if c is None:
            return
        self._touch(c.id)
        c.archived = True
        self._index_email(c, c.properties.get("email"))
        c.updated_ms = max(self.now_ms(), c.updated_ms)
        self._reindex(c, c.updated_ms)

    def restore(self, contact_id: str) -> Contact:
        """Bring an archived contact back under its id (HubSpot's recycle bin, 90 days)."""
        c = self.contacts.get(contact_id)
        if c is None or not c.archived:
            raise ApiError(404, "OBJECT_NOT_FOUND", "Object not found")
        self._check_email(c.properties, c.id)
        c.archived = False
        self._index_email(c, None)
        c.updated_ms = max(self.now_ms(), c.updated_ms)
        self._reindex(c, c.updated_ms)
        return c

    def purge(self, contact_id: str) -> None:
        c = self.contacts.pop(contact_id, None)
        if c is not None and not c.archived:
            c.archived = True
            self._index_email(c, c.properties.get("email"))
        self.index.setdefault(contact_id, []).append((0.0, None))

    # -- reads ----------------------------------------------------------------
    def list_page(
        self, limit: int, after: str | None, archived: bool = False
    ) -> tuple[list[Contact], str | None]:
        """One page in id order: live contacts, or with archived=True only archived ones."""
        start = int(after) if after else 0
        ids = sorted(
            int(i) for i, c in self.contacts.items() if c.archived == archived and int(i) > start
        )
        page = ids[:limit]
        more = len(ids) > limit
        return [self.contacts[str(i)] for i in page], (str(page[-1]) if more else None)

    def searchable(self) -> list[Contact]:
        now = self.clock()
        out: list[Contact] = []
        for versions in self.index.values():
            visible, doc = versions[-1]
            if visible > now:  # the newest version is not searchable yet: the last that is
                seen = [d for v, d in versions if v <= now]
                doc = seen[-1] if seen else None
            if doc is not None:
                out.append(doc)
        return out

"""Read-only lookups in the store for the trust services (TrustService,
AuditService, RelayService): card or number to link, a person's history and
details, and the subjects under which the access log may name them.
"""

from __future__ import annotations

import lmdb

from ..core import history, identifiers, persons
from ..core.store import link_id_of, link_key
from .access_log import card_subject, link_subject, number_subject


class PersonDirectory:
    """Read-only lookups over a py-lmdb environment: card -> link, number -> link,
    a person's history, and the subjects under which the log may name them."""

    def __init__(self, env, dbs: dict | None = None):
        """`dbs`: the writer's open handles (opening again in a writable env
        would take a write transaction)."""
        self.env = env
        dbs = dbs or {}

        def db(name: str):
            if name in dbs:
                return dbs[name]
            try:
                return env.open_db(name.encode(), create=False)
            except lmdb.Error:  # NotFoundError: an older store without it
                return None

        self.card = db("card")
        self.card_of = db("card_of")
        self.card_former = db("card_former")
        self.number = db("number")
        self.history = db("history")
        self.person = db("person")
        self.basic4 = db("basic4")

    def link_of_card(self, serial_key: bytes) -> int | None:
        with self.env.begin() as txn:
            raw = txn.get(serial_key, db=self.card)
        return link_id_of(raw) if raw else None

    def link_of_number(self, number_key: bytes) -> int | None:
        with self.env.begin() as txn:
            raw = txn.get(number_key, db=self.number)
        return link_id_of(raw) if raw else None

    def history_value(self, link_id: int) -> bytes | None:
        with self.env.begin() as txn:
            return txn.get(link_key(link_id), db=self.history)

    def qualifications(self, link_id: int) -> list:
        """Each qualification with its own person (history.qualifications)."""
        value = self.history_value(link_id)
        return history.qualifications(value) if value else []

    def person_on(self, link_id: int, day: int):
        """The person's basic information in force on `day` (persons.py), or None."""
        if self.person is None:
            return None
        with self.env.begin() as txn:
            raw = persons.in_force(persons.decode(txn.get(link_key(link_id), db=self.person)), day)
        return persons.person(raw) if raw is not None else None

    def subjects(self, link_id: int) -> set[str]:
        """Every subject under which records about this person were written."""
        out = {link_subject(link_id)}
        lk = link_key(link_id)
        serials = []
        with self.env.begin() as txn:
            serials.append(txn.get(lk, db=self.card_of))
            value = txn.get(lk, db=self.history)
            if self.card_former is not None:  # cards this person's re-issued cards replaced
                cursor = txn.cursor(db=self.card_former)
                if cursor.set_range(lk):
                    for key in cursor.iternext(values=False):
                        if not key.startswith(lk):
                            break
                        serials.append(key[len(lk) :])
        out.update(card_subject(s) for s in serials if s)
        if value:
            for _, q in history.qualifications(value):
                try:
                    out.add(number_subject(history.qualification_number_key(q)))
                except identifiers.InvalidIdentifier:
                    continue
        return out

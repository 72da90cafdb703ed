"""The preference store: prompts, responses, comparisons, labels, annotators and assignments in SQL.

SQLite is the embedded default (WAL journal, `synchronous=FULL`, one `BEGIN IMMEDIATE`
transaction per label, so an accepted label survives a crash of the app); PostgreSQL
(`postgresql+psycopg://...`) serves a team sharing one database. The tests run both, including a
server killed halfway through 1,000 concurrent labels.

The model, in short: a *prompt* is a conversation (a list of `{"role", "content"}` messages); a
*response* answers one prompt and comes from a model (name + checkpoint) or a person; a
*comparison* groups two or more responses to one prompt, and is either a `pair` task (each
annotator judges one pair of them, the same pair for everyone) or a `rank` task (each annotator
ranks all of them, ties allowed); an *assignment* gives a comparison to one annotator, with the
shown order randomised per annotator and fixed when it is assigned; a *label* is an annotator's
verdict on an assignment: per criterion (helpful, harmless, honest, overall) one of `A`, `B`,
`tie`, `both_bad` for a pair, where A and B are the assignment's shown order, or a ranking.

Labels are append-only: changing a label adds a revision (1, 2, ...) and the latest one counts;
an admin's rejection is a review row beside the revision it rejects. Nothing is overwritten in
place. *Gold* comparisons have a known better response (`gold`) or an obvious one (`attention`
checks); they are mixed into annotators' queues like any other work, scored per annotator, and
never exported as training data.

Every write goes through `PreferenceStore`; the Gradio app, the programmatic judge and the
importers use the same methods, and each method that writes is one transaction.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import random
import secrets
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from sqlalchemy import (
    JSON,
    Connection,
    DateTime,
    Float,
    ForeignKey,
    Integer,
    String,
    Text,
    UniqueConstraint,
    create_engine,
    event,
    func,
    inspect,
    make_url,
    select,
)
from sqlalchemy.exc import ArgumentError, DBAPIError
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, sessionmaker

from align.errors import InputError
from rewards.label_config import CRITERIA, GOLD_KINDS, MAX_RANKED, TASKS
from rewards.messages import prompt_problem

log = logging.getLogger(__name__)

CHOICES = ("A", "B", "tie", "both_bad")
"""A label's answer per criterion, relative to the assignment's shown order."""
ROLES = ("annotator", "admin")

_PBKDF2_ITERATIONS = 100_000


def _now() -> datetime:
    return datetime.now(timezone.utc)


class Base(DeclarativeBase):
    pass


class Annotator(Base):
    __tablename__ = "annotators"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    password_hash: Mapped[str] = mapped_column(String(200))
    """`pbkdf2_sha256$iterations$salt$hash`, never the password."""
    role: Mapped[str] = mapped_column(String(20), default="annotator")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=_now)


class Prompt(Base):
    __tablename__ = "prompts"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    messages: Mapped[list[dict[str, str]]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=_now)


class Response(Base):
    __tablename__ = "responses"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    prompt_id: Mapped[int] = mapped_column(ForeignKey("prompts.id"), index=True)
    text: Mapped[str] = mapped_column(Text)
    model: Mapped[str | None] = mapped_column(String(200))
    """The model's name, for a generated response."""
    checkpoint: Mapped[str | None] = mapped_column(String(500))
    """The checkpoint (path or step) that generated it."""
    annotator_id: Mapped[int | None] = mapped_column(ForeignKey("annotators.id"))
    """The person who wrote it (a rewrite), for a human response."""
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=_now)


class Comparison(Base):
    __tablename__ = "comparisons"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    prompt_id: Mapped[int] = mapped_column(ForeignKey("prompts.id"), index=True)
    response_ids: Mapped[list[int]] = mapped_column(JSON)
    """Two or more responses to the prompt."""
    task: Mapped[str] = mapped_column(String(10), default="pair", server_default="pair")
    """pair (annotators judge one pair of the responses) or rank (they rank all of them)."""
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=_now)


class Gold(Base):
    """The known answer of a gold comparison or attention check; only the store's own reports read it."""

    __tablename__ = "gold"
    comparison_id: Mapped[int] = mapped_column(ForeignKey("comparisons.id"), primary_key=True)
    kind: Mapped[str] = mapped_column(String(10))
    """gold or attention."""
    chosen_id: Mapped[int] = mapped_column(ForeignKey("responses.id"))
    """The response a correct `overall` verdict prefers."""


class Assignment(Base):
    __tablename__ = "assignments"
    __table_args__ = (UniqueConstraint("comparison_id", "annotator_id"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    comparison_id: Mapped[int] = mapped_column(ForeignKey("comparisons.id"), index=True)
    annotator_id: Mapped[int] = mapped_column(ForeignKey("annotators.id"), index=True)
    response_a_id: Mapped[int] = mapped_column(ForeignKey("responses.id"))
    response_b_id: Mapped[int] = mapped_column(ForeignKey("responses.id"))
    shown_order: Mapped[list[int] | None] = mapped_column(JSON)
    """For a ranking: every response id in the order this annotator sees them (A and B are the first two)."""
    status: Mapped[str] = mapped_column(String(10), default="pending")
    """pending, done or skipped."""
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=_now)


class Label(Base):
    """One revision of an annotator's verdict on an assignment; a change adds a row, never edits one."""

    __tablename__ = "labels"
    __table_args__ = (UniqueConstraint("assignment_id", "revision", name="uq_labels_assignment_revision"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    assignment_id: Mapped[int] = mapped_column(ForeignKey("assignments.id"))
    revision: Mapped[int] = mapped_column(Integer, default=1, server_default="1")
    """1 for the first label of the assignment, then 2, 3, ... for each change; the highest counts."""
    comparison_id: Mapped[int] = mapped_column(ForeignKey("comparisons.id"), index=True)
    annotator_id: Mapped[int] = mapped_column(ForeignKey("annotators.id"), index=True)
    response_a_id: Mapped[int] = mapped_column(ForeignKey("responses.id"))
    response_b_id: Mapped[int] = mapped_column(ForeignKey("responses.id"))
    helpful: Mapped[str | None] = mapped_column(String(10))
    harmless: Mapped[str | None] = mapped_column(String(10))
    honest: Mapped[str | None] = mapped_column(String(10))
    overall: Mapped[str | None] = mapped_column(String(10))
    """The four criteria of a pair label (None on a ranking)."""
    ranking: Mapped[list[list[int]] | None] = mapped_column(JSON)
    """A ranking: groups of response ids, best first; the ids of one group are tied."""
    rewrite_response_id: Mapped[int | None] = mapped_column(ForeignKey("responses.id"))
    seconds: Mapped[float] = mapped_column(Float, default=0.0)
    """Time from showing the comparison to submitting this revision."""
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=_now)


class LabelReview(Base):
    """An admin's rejection of one label revision, with the reason (append-only too)."""

    __tablename__ = "label_reviews"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    label_id: Mapped[int] = mapped_column(ForeignKey("labels.id"), index=True)
    reviewer_id: Mapped[int] = mapped_column(ForeignKey("annotators.id"))
    reason: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=_now)


_V1_TABLES = {"annotators", "prompts", "responses", "comparisons", "assignments", "labels"}
"""The tables of the first version of the store (0.1); later tables are created when it is opened."""


@dataclass(frozen=True)
class Task:
    """One assignment as an annotator sees it: nothing in it says whether it is a gold item."""

    assignment_id: int
    comparison_id: int
    messages: list[dict[str, str]]
    response_a: str
    response_b: str
    kind: str = "pair"
    """pair: judge response_a against response_b per criterion; rank: rank all of `responses`."""
    responses: tuple[str, ...] = ()
    """Every response in the shown order (A, B for a pair)."""
    revision: int = 0
    """The annotator's latest revision of this label (0: not labelled yet)."""
    choices: dict[str, str] | None = None
    """That revision's choices (a pair), to start an edit from."""
    ranks: tuple[int, ...] | None = None
    """That revision's rank of each shown response (a ranking; 1 = best, equal ranks = a tie)."""
    rewrite: str | None = None
    """That revision's rewrite."""


@dataclass(frozen=True)
class LabelRecord:
    """A stored pair label (its latest revision), joined with what an export or agreement needs."""

    label_id: int
    comparison_id: int
    annotator: str
    messages: list[dict[str, str]]
    response_a_id: int
    response_b_id: int
    response_a: str
    response_b: str
    choices: dict[str, str]
    """Every criterion for a person's pair label; only `overall` for a pair implied by a ranking."""
    rewrite: str | None
    seconds: float
    assignment_id: int = 0
    revision: int = 1
    rejected: str | None = None
    """The admin's reason, when this revision was rejected."""


@dataclass(frozen=True)
class RankingRecord:
    """A stored ranking (its latest revision), with the prompt and every response's text."""

    label_id: int
    comparison_id: int
    annotator: str
    messages: list[dict[str, str]]
    texts: dict[int, str]
    """Response id -> text, in the comparison's stored order."""
    ranking: list[list[int]]
    """Groups of response ids, best first; the ids of one group are tied."""
    seconds: float
    assignment_id: int = 0
    revision: int = 1
    rejected: str | None = None

    def rank_of(self) -> dict[int, int]:
        """Response id -> rank (1 = best; tied responses share a rank)."""
        return {i: n for n, group in enumerate(self.ranking, 1) for i in group}

    def implied_pairs(self) -> list[LabelRecord]:
        """The pairwise verdicts the ranking implies, one `overall` label per pair of responses
        (A = the one stored first): A, B or tie."""
        rank, ids = self.rank_of(), list(self.texts)
        pairs = []
        for x, a in enumerate(ids):
            for b in ids[x + 1 :]:
                choice = "A" if rank[a] < rank[b] else "B" if rank[a] > rank[b] else "tie"
                pairs.append(
                    LabelRecord(
                        label_id=self.label_id,
                        comparison_id=self.comparison_id,
                        annotator=self.annotator,
                        messages=self.messages,
                        response_a_id=a,
                        response_b_id=b,
                        response_a=self.texts[a],
                        response_b=self.texts[b],
                        choices={"overall": choice},
                        rewrite=None,
                        seconds=self.seconds,
                        assignment_id=self.assignment_id,
                        revision=self.revision,
                        rejected=self.rejected,
                    )
                )
        return pairs


@dataclass(frozen=True)
class RecentLabel:
    """One of an annotator's own labels, for the list they pick an edit from."""

    assignment_id: int
    revision: int
    labelled_at: datetime
    prompt: str
    """The last user turn, cut to 80 characters."""
    verdict: str
    """`overall: A` for a pair, `2 > 1 = 4 > 3` (shown positions) for a ranking."""


@dataclass(frozen=True)
class LabelRevision:
    """One revision in a label's history."""

    label_id: int
    revision: int
    annotator: str
    choices: dict[str, str] | None
    ranking: list[list[int]] | None
    rewrite: str | None
    seconds: float
    created_at: datetime
    rejected: str | None


@dataclass
class AnnotatorActivity:
    """What the quality report needs about one annotator (gold results as counts only)."""

    annotator: str
    labelled: int = 0
    """Assignments with a label, gold and attention checks included."""
    skipped: int = 0
    gold: int = 0
    gold_correct: int = 0
    attention: int = 0
    attention_passed: int = 0
    edits: int = 0
    """Revisions beyond the first."""
    rejected: int = 0
    """Labels whose latest revision an admin rejected."""
    seconds: list[float] = field(default_factory=list)
    """Time to label, per labelled assignment (its first revision)."""

    @property
    def gold_accuracy(self) -> float | None:
        """Share of gold items answered correctly (None before the first one)."""
        return self.gold_correct / self.gold if self.gold else None


def hash_password(password: str, salt: str | None = None, iterations: int = _PBKDF2_ITERATIONS) -> str:
    """PBKDF2-SHA256 of a password with a random salt, as one string."""
    salt = salt or secrets.token_hex(16)
    digest = hashlib.pbkdf2_hmac("sha256", password.encode(), salt.encode(), iterations).hex()
    return f"pbkdf2_sha256${iterations}${salt}${digest}"


def verify_password(password: str, stored: str) -> bool:
    try:
        _, iterations, salt, _digest = stored.split("$")
    except ValueError:
        return False
    return hmac.compare_digest(hash_password(password, salt, int(iterations)), stored)


def check_messages(messages: Any, where: str) -> list[dict[str, str]]:
    """A prompt as a conversation: a string becomes one user turn; anything else must be messages."""
    problem = prompt_problem(messages)
    if problem is not None:
        raise InputError(f"{where}: {problem}")
    if isinstance(messages, str):
        return [{"role": "user", "content": messages}]
    return [{"role": m["role"], "content": m["content"]} for m in messages]


def _comparison_key(messages: list[dict[str, str]], texts: list[str]) -> str:
    return json.dumps([messages, sorted(texts)], ensure_ascii=False, sort_keys=True)


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    # Let SQLAlchemy issue BEGIN itself (below) instead of pysqlite's deferred implicit BEGIN.
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=FULL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()


def _sqlite_begin(connection: Any) -> None:
    # IMMEDIATE takes the write lock up front: a read-then-write transaction never fails with
    # SQLITE_BUSY halfway (it waits for busy_timeout instead), so concurrent annotators queue.
    connection.exec_driver_sql("BEGIN IMMEDIATE")


def _upgrade_from_v1(connection: Connection) -> bool:
    """Bring a store written by align-suite 0.1 (one label row per assignment, revised in place)
    to this schema, keeping every label as its revision 1. Returns whether anything changed."""
    inspector = inspect(connection)
    if "labels" not in inspector.get_table_names():
        return False
    if "revision" in {c["name"] for c in inspector.get_columns("labels")}:
        return False
    for table, column, ddl in (
        ("comparisons", "task", "VARCHAR(10) NOT NULL DEFAULT 'pair'"),
        ("assignments", "shown_order", "JSON"),
    ):
        if column not in {c["name"] for c in inspector.get_columns(table)}:
            connection.exec_driver_sql(f"ALTER TABLE {table} ADD COLUMN {column} {ddl}")
    if connection.dialect.name == "sqlite":
        # SQLite cannot drop the old UNIQUE(assignment_id) in place: rebuild the table. Index
        # names are global in SQLite, so the old table's go first.
        for index in inspector.get_indexes("labels"):
            if index["name"]:
                connection.exec_driver_sql(f'DROP INDEX "{index["name"]}"')
        connection.exec_driver_sql("ALTER TABLE labels RENAME TO labels_v1")
        Label.__table__.create(connection)
        connection.exec_driver_sql(
            "INSERT INTO labels (id, assignment_id, revision, comparison_id, annotator_id, response_a_id, "
            "response_b_id, helpful, harmless, honest, overall, ranking, rewrite_response_id, seconds, "
            "created_at) SELECT id, assignment_id, 1, comparison_id, annotator_id, response_a_id, "
            "response_b_id, helpful, harmless, honest, overall, NULL, rewrite_response_id, seconds, "
            "updated_at FROM labels_v1"
        )
        connection.exec_driver_sql("DROP TABLE labels_v1")
        return True
    for constraint in inspector.get_unique_constraints("labels"):
        connection.exec_driver_sql(f'ALTER TABLE labels DROP CONSTRAINT "{constraint["name"]}"')
    connection.exec_driver_sql("ALTER TABLE labels ADD COLUMN revision INTEGER NOT NULL DEFAULT 1")
    connection.exec_driver_sql("ALTER TABLE labels ADD COLUMN ranking JSON")
    for criterion in CRITERIA:
        connection.exec_driver_sql(f"ALTER TABLE labels ALTER COLUMN {criterion} DROP NOT NULL")
    # 0.1 revised a label in place: what it holds was written at updated_at.
    connection.exec_driver_sql("UPDATE labels SET created_at = updated_at")
    connection.exec_driver_sql("ALTER TABLE labels DROP COLUMN updated_at")
    connection.exec_driver_sql(
        "ALTER TABLE labels ADD CONSTRAINT uq_labels_assignment_revision UNIQUE (assignment_id, revision)"
    )
    return True


def _verdict(label: Label, shown: list[int]) -> str:
    if label.ranking is None:
        return f"overall: {label.overall}"
    position = {response_id: n for n, response_id in enumerate(shown, 1)}
    return " > ".join(
        " = ".join(str(position[i]) for i in sorted(g, key=position.get)) for g in label.ranking
    )


class PreferenceStore:
    """All reads and writes of preference data; each writing method is one transaction."""

    def __init__(self, url: str, create: bool = True) -> None:
        """Open the store at `url` (a SQLAlchemy URL). `create`: make it (and its tables) when it
        does not exist; a command that only reads (export, stats) passes False, so a typo in the
        URL is an error instead of a new, empty store. A store of an older version is upgraded."""
        self.url = url
        try:
            parsed = make_url(url)
        except ArgumentError:
            raise InputError(f"store: {url!r} is not a database URL (e.g. sqlite:///labels.sqlite)") from None
        if parsed.get_backend_name() == "sqlite":
            database = parsed.database
            if database and database != ":memory:":
                if not Path(database).is_file() and not create:
                    raise InputError(f"store: {database} does not exist (no labels to read)")
                Path(database).parent.mkdir(parents=True, exist_ok=True)
            try:
                self.engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})
            except ModuleNotFoundError as err:
                raise InputError(
                    f"store: {url!r} needs the Python package {err.name!r}; install it"
                ) from None
            event.listen(self.engine, "connect", _sqlite_pragmas)
            event.listen(self.engine, "begin", _sqlite_begin)
        else:
            try:
                self.engine = create_engine(url, pool_pre_ping=True)
            except (ModuleNotFoundError, ArgumentError) as err:
                driver = getattr(err, "name", None) or parsed.drivername
                raise InputError(
                    f"store: {url!r} needs the database driver {driver!r}, which is not installed "
                    "(PostgreSQL: pip install 'psycopg[binary]' and a postgresql+psycopg:// URL)"
                ) from None
        try:
            if not create:
                missing = _V1_TABLES - set(inspect(self.engine).get_table_names())
                if missing:
                    raise InputError(f"store: {url} is not a label store (no table {sorted(missing)[0]!r})")
            with self.engine.begin() as connection:
                if _upgrade_from_v1(connection):
                    log.info("store %s: upgraded from 0.1 (labels kept as revision 1)", url)
                Base.metadata.create_all(connection)
        except DBAPIError as err:
            self.engine.dispose()
            reason = str(err.orig).splitlines()[0] if err.orig is not None else str(err).splitlines()[0]
            raise InputError(
                f"store: cannot open {url} ({reason}); is it a label store, and is the server up?"
            ) from None
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)

    @contextmanager
    def transaction(self) -> Iterator[Session]:
        """One transaction: committed when the block ends, rolled back if it raises."""
        with self._sessions() as session, session.begin():
            yield session

    def close(self) -> None:
        self.engine.dispose()

    # --- annotators

    def add_annotator(self, name: str, password: str, role: str = "annotator") -> int:
        """Create an annotator (or reset an existing one's password and role)."""
        if role not in ROLES:
            raise InputError(f"annotator {name!r}: role must be one of {', '.join(ROLES)}, got {role!r}")
        if not name or not password:
            raise InputError("annotator: name and password must be non-empty")
        with self.transaction() as s:
            row = s.scalar(select(Annotator).where(Annotator.name == name))
            if row is None:
                row = Annotator(name=name, password_hash=hash_password(password), role=role)
                s.add(row)
            else:
                row.password_hash, row.role = hash_password(password), role
            s.flush()
            return row.id

    def check_password(self, name: str, password: str) -> bool:
        with self.transaction() as s:
            stored = s.scalar(select(Annotator.password_hash).where(Annotator.name == name))
        return stored is not None and verify_password(password, stored)

    def role(self, name: str) -> str | None:
        with self.transaction() as s:
            return s.scalar(select(Annotator.role).where(Annotator.name == name))

    def annotators(self) -> list[str]:
        with self.transaction() as s:
            return list(s.scalars(select(Annotator.name).order_by(Annotator.id)))

    def _annotator_id(self, s: Session, name: str) -> int:
        found = s.scalar(select(Annotator.id).where(Annotator.name == name))
        if found is None:
            raise PermissionError(f"unknown annotator {name!r}")
        return found

    # --- prompts, responses, comparisons

    def add_comparisons(
        self,
        items: Sequence[tuple[list[dict[str, str]], Sequence[dict[str, Any]]]],
        task: str = "pair",
    ) -> list[int]:
        """Add prompts with their responses, one comparison per prompt, in one transaction.

        Each response is `{"text", "model"?, "checkpoint"?}`; at least two per prompt. `task`:
        pair (annotators judge one pair of the responses) or rank (they rank all of them, at most
        `MAX_RANKED`). A comparison already in the store (same conversation, same response texts)
        is not added again, so an interrupted `align label add` can simply be re-run. Returns the
        ids of the added ones.
        """
        if task not in TASKS:
            raise InputError(f"comparisons: task must be one of {', '.join(TASKS)}, got {task!r}")
        ids = []
        with self.transaction() as s:
            seen = self._comparison_keys(s, gold=False)
            for n, (messages, responses) in enumerate(items):
                if len(responses) < 2:
                    raise InputError(f"comparison {n}: needs at least two responses, got {len(responses)}")
                if task == "rank" and len(responses) > MAX_RANKED:
                    raise InputError(
                        f"comparison {n}: a ranking shows at most {MAX_RANKED} responses, got {len(responses)}"
                    )
                key = _comparison_key(messages, [r["text"] for r in responses])
                if key in seen:
                    continue
                seen.add(key)
                ids.append(self._add_comparison(s, messages, responses, task).id)
        return ids

    def add_gold(self, items: Sequence[tuple[list[dict[str, str]], str, str, str]]) -> list[int]:
        """Add gold comparisons and attention checks: `(messages, better, worse, kind)` each, kind
        gold or attention. They are pair comparisons like any other, but never assigned as
        ordinary work nor exported: `assign(gold_rate=...)` mixes them into queues. Returns the
        ids of the added ones (one already in the store is not added again)."""
        ids = []
        with self.transaction() as s:
            seen = self._comparison_keys(s, gold=True)
            for n, (messages, better, worse, kind) in enumerate(items):
                if kind not in GOLD_KINDS:
                    raise InputError(f"gold {n}: kind must be one of {', '.join(GOLD_KINDS)}, got {kind!r}")
                if better == worse:
                    raise InputError(f"gold {n}: the better and the worse response are the same text")
                key = _comparison_key(messages, [better, worse])
                if key in seen:
                    continue
                seen.add(key)
                comparison = self._add_comparison(s, messages, [{"text": better}, {"text": worse}], "pair")
                s.add(Gold(comparison_id=comparison.id, kind=kind, chosen_id=comparison.response_ids[0]))
                ids.append(comparison.id)
        return ids

    @staticmethod
    def _comparison_keys(s: Session, gold: bool) -> set[str]:
        texts = dict(s.execute(select(Response.id, Response.text)).all())
        gold_ids = set(s.scalars(select(Gold.comparison_id)))
        return {
            _comparison_key(messages, [texts[i] for i in response_ids])
            for comparison_id, messages, response_ids in s.execute(
                select(Comparison.id, Prompt.messages, Comparison.response_ids).join(Prompt)
            )
            if (comparison_id in gold_ids) == gold
        }

    @staticmethod
    def _add_comparison(
        s: Session, messages: list[dict[str, str]], responses: Sequence[dict[str, Any]], task: str
    ) -> Comparison:
        prompt = Prompt(messages=messages)
        s.add(prompt)
        s.flush()
        rows = [
            Response(
                prompt_id=prompt.id, text=r["text"], model=r.get("model"), checkpoint=r.get("checkpoint")
            )
            for r in responses
        ]
        s.add_all(rows)
        s.flush()
        comparison = Comparison(prompt_id=prompt.id, response_ids=[r.id for r in rows], task=task)
        s.add(comparison)
        s.flush()
        return comparison

    def comparison_count(self) -> int:
        """Comparisons in the store, gold ones not counted."""
        with self.transaction() as s:
            gold = s.scalar(select(func.count(Gold.comparison_id))) or 0
            return (s.scalar(select(func.count(Comparison.id))) or 0) - gold

    def gold_comparison_ids(self) -> set[int]:
        """Ids of the gold comparisons and attention checks (for server-side code that must leave
        them out, e.g. a selection of comparisons to assign; never send them to an annotator)."""
        with self.transaction() as s:
            return set(s.scalars(select(Gold.comparison_id)))

    # --- assignments

    def assign(
        self,
        overlap: int = 1,
        annotators: Sequence[str] | None = None,
        seed: int = 0,
        comparisons: Sequence[int] | None = None,
        gold_rate: float = 0.0,
    ) -> int:
        """Give each comparison to `overlap` annotators, balancing the load; returns new assignments.

        `annotators` and `comparisons` (ids) restrict who gets work and which work (default: all).
        Comparisons already assigned to enough of those annotators are left alone, so re-running after adding
        data assigns only the new work. The pair shown (for pair comparisons of more than two
        responses) is the same for every annotator of a comparison, so their labels can be
        compared; the A/B order (and a ranking's order) is drawn per annotator.

        `gold_rate`: the share of each annotator's new queue that is gold items and attention
        checks, drawn at random positions among their new work (each annotator sees a gold item
        at most once). Gold comparisons are never assigned as ordinary work.
        """
        if not 0.0 <= gold_rate < 1.0:
            raise InputError(f"assign: gold_rate must be in [0, 1), got {gold_rate!r}")
        rng = random.Random(seed)
        with self.transaction() as s:
            query = select(Annotator.id, Annotator.name).order_by(Annotator.id)
            people = [(i, n) for i, n in s.execute(query) if annotators is None or n in annotators]
            if annotators is not None and len(people) < len(set(annotators)):
                missing = sorted(set(annotators) - {n for _, n in people})
                raise InputError(f"assign: unknown annotator(s) {', '.join(missing)}")
            if overlap > len(people):
                raise InputError(
                    f"assign: overlap {overlap} needs at least {overlap} annotators, have {len(people)}"
                )
            gold_ids = sorted(s.scalars(select(Gold.comparison_id)))
            is_gold = set(gold_ids)
            load = {i: 0 for i, _ in people}
            have: dict[int, set[int]] = {}
            for comparison_id, annotator_id in s.execute(
                select(Assignment.comparison_id, Assignment.annotator_id)
            ):
                have.setdefault(comparison_id, set()).add(annotator_id)
                if annotator_id in load and comparison_id not in is_gold:
                    load[annotator_id] += 1
            created = 0

            def add(comparison: Comparison, annotator_id: int, pair: list[int]) -> None:
                order = None
                if comparison.task == "rank":
                    order = list(comparison.response_ids)
                    rng.shuffle(order)
                    a, b = order[:2]
                else:
                    a, b = pair if rng.random() < 0.5 else pair[::-1]
                s.add(
                    Assignment(
                        comparison_id=comparison.id,
                        annotator_id=annotator_id,
                        response_a_id=a,
                        response_b_id=b,
                        shown_order=order,
                    )
                )
                have.setdefault(comparison.id, set()).add(annotator_id)

            def mix_in_gold(annotator_id: int) -> int:
                added = 0
                # A geometric number of gold items before each ordinary one: a share gold_rate.
                while rng.random() < gold_rate:
                    unseen = [g for g in gold_ids if annotator_id not in have.get(g, set())]
                    if not unseen:
                        break
                    gold = s.get(Comparison, rng.choice(unseen))
                    assert gold is not None
                    add(gold, annotator_id, self._pair(s, gold))
                    added += 1
                return added

            query = select(Comparison).order_by(Comparison.id)
            if comparisons is not None:
                query = query.where(Comparison.id.in_(list(comparisons)))
            for comparison in s.scalars(query).all():
                if comparison.id in is_gold:
                    continue
                taken = have.get(comparison.id, set())
                need = overlap - len(taken & set(load))
                if need <= 0:
                    continue
                pair = self._pair(s, comparison)
                free = sorted((i for i in load if i not in taken), key=lambda i: (load[i], i))
                for annotator_id in free[:need]:
                    if gold_rate > 0:  # no draw otherwise: the orders of a seed stay as they were
                        created += mix_in_gold(annotator_id)
                    add(comparison, annotator_id, pair)
                    load[annotator_id] += 1
                    created += 1
            return created

    @staticmethod
    def _pair(s: Session, comparison: Comparison) -> list[int]:
        # Fixed per comparison; from two different checkpoints when the comparison has them.
        rng = random.Random(comparison.id)
        first = rng.choice(comparison.response_ids)
        source = dict(
            s.execute(
                select(Response.id, Response.checkpoint).where(Response.prompt_id == comparison.prompt_id)
            ).all()
        )
        others = [i for i in comparison.response_ids if i != first]
        different = [i for i in others if source.get(i) != source.get(first)]
        return [first, rng.choice(different or others)]

    def next_task(self, annotator: str) -> Task | None:
        """The annotator's next pending assignment, or None when they are done."""
        with self.transaction() as s:
            annotator_id = self._annotator_id(s, annotator)
            assignment = s.scalar(
                select(Assignment)
                .where(Assignment.annotator_id == annotator_id, Assignment.status == "pending")
                .order_by(Assignment.id)
                .limit(1)
            )
            return None if assignment is None else self._task(s, assignment)

    def task(self, annotator: str, assignment_id: int) -> Task:
        """One of the annotator's own assignments, with their latest label to start an edit from."""
        with self.transaction() as s:
            return self._task(s, self._own_assignment(s, annotator, assignment_id))

    def _task(self, s: Session, assignment: Assignment) -> Task:
        comparison = s.get(Comparison, assignment.comparison_id)
        assert comparison is not None
        prompt = s.get(Prompt, comparison.prompt_id)
        assert prompt is not None
        shown = assignment.shown_order or [assignment.response_a_id, assignment.response_b_id]
        texts = dict(s.execute(select(Response.id, Response.text).where(Response.id.in_(shown))).all())
        latest = self._latest(s, assignment.id)
        choices = ranks = rewrite = None
        if latest is not None and latest.ranking is None:
            choices = {c: getattr(latest, c) for c in CRITERIA}
            if latest.rewrite_response_id is not None:
                rewrite = s.scalar(select(Response.text).where(Response.id == latest.rewrite_response_id))
        elif latest is not None:
            rank = {i: n for n, group in enumerate(latest.ranking or [], 1) for i in group}
            ranks = tuple(rank[i] for i in shown)
        return Task(
            assignment_id=assignment.id,
            comparison_id=comparison.id,
            messages=prompt.messages,
            response_a=texts[shown[0]],
            response_b=texts[shown[1]],
            kind=comparison.task,
            responses=tuple(texts[i] for i in shown),
            revision=0 if latest is None else latest.revision,
            choices=choices,
            ranks=ranks,
            rewrite=rewrite,
        )

    @staticmethod
    def _latest(s: Session, assignment_id: int) -> Label | None:
        return s.scalar(
            select(Label).where(Label.assignment_id == assignment_id).order_by(Label.revision.desc()).limit(1)
        )

    def _own_assignment(
        self, s: Session, annotator: str, assignment_id: int, lock: bool = False
    ) -> Assignment:
        annotator_id = self._annotator_id(s, annotator)
        # FOR UPDATE (PostgreSQL): two submits of one assignment cannot both take the same revision.
        assignment = s.get(Assignment, assignment_id, with_for_update=lock)
        if assignment is None or assignment.annotator_id != annotator_id:
            # The same answer for "not yours" and "does not exist": ids are not an oracle.
            raise PermissionError(f"assignment {assignment_id} is not assigned to {annotator!r}")
        return assignment

    def progress(self, annotator: str) -> tuple[int, int]:
        """(done, remaining) for one annotator; skipped assignments count as neither."""
        with self.transaction() as s:
            annotator_id = self._annotator_id(s, annotator)
            counts = dict(
                s.execute(
                    select(Assignment.status, func.count())
                    .where(Assignment.annotator_id == annotator_id)
                    .group_by(Assignment.status)
                ).all()
            )
        return counts.get("done", 0), counts.get("pending", 0)

    # --- labels

    def record_label(
        self,
        annotator: str,
        assignment_id: int,
        choices: dict[str, str],
        seconds: float = 0.0,
        rewrite: str | None = None,
    ) -> int:
        """Store the annotator's label for one of their pair assignments; one transaction.

        `choices` maps every criterion to A, B, tie or both_bad. A non-empty `rewrite` is stored
        as a new response written by the annotator. Labelling an assignment again adds a
        revision (the history keeps every one; the latest counts). Raises PermissionError for an
        assignment that is not the annotator's: nobody can write or change another annotator's
        label. Returns the new revision's label id.
        """
        missing = [c for c in CRITERIA if c not in choices]
        bad = {c: v for c, v in choices.items() if c not in CRITERIA or v not in CHOICES}
        if missing or bad:
            raise InputError(
                f"label: needs each of {', '.join(CRITERIA)} set to one of {', '.join(CHOICES)}; "
                f"missing {missing}, invalid {bad}"
            )
        with self.transaction() as s:
            assignment = self._own_assignment(s, annotator, assignment_id, lock=True)
            comparison = s.get(Comparison, assignment.comparison_id)
            assert comparison is not None
            if comparison.task != "pair":
                raise InputError(f"assignment {assignment_id} is a ranking: record it with record_ranking")
            latest = self._latest(s, assignment.id)
            rewrite_id = None
            if rewrite and rewrite.strip():
                previous = None if latest is None else latest.rewrite_response_id
                if (
                    previous is not None
                    and s.scalar(select(Response.text).where(Response.id == previous)) == rewrite
                ):
                    rewrite_id = previous  # an edit that kept the rewrite: no second copy of it
                else:
                    row = Response(
                        prompt_id=comparison.prompt_id, text=rewrite, annotator_id=assignment.annotator_id
                    )
                    s.add(row)
                    s.flush()
                    rewrite_id = row.id
            return self._add_revision(
                s,
                assignment,
                latest,
                seconds,
                **{c: choices[c] for c in CRITERIA},
                rewrite_response_id=rewrite_id,
            )

    def record_ranking(
        self, annotator: str, assignment_id: int, ranks: Sequence[int], seconds: float = 0.0
    ) -> int:
        """Store the annotator's ranking for one of their rank assignments; one transaction.

        `ranks`: the rank of each response in the shown order, 1 = best; equal ranks are a tie
        (only the order matters: 1, 1, 3 and 1, 1, 2 are the same ranking). Labelling again adds
        a revision, as for `record_label`. Returns the new revision's label id.
        """
        with self.transaction() as s:
            assignment = self._own_assignment(s, annotator, assignment_id, lock=True)
            comparison = s.get(Comparison, assignment.comparison_id)
            assert comparison is not None
            shown = assignment.shown_order
            if comparison.task != "rank" or shown is None:
                raise InputError(f"assignment {assignment_id} is a pair: record it with record_label")
            k = len(shown)
            if len(ranks) != k or any(
                isinstance(r, bool) or not isinstance(r, int) or not 1 <= r <= k for r in ranks
            ):
                raise InputError(
                    f"ranking: needs a rank from 1 to {k} for each of the {k} responses, got {list(ranks)}"
                )
            groups = [
                [i for i, r in zip(shown, ranks, strict=True) if r == rank] for rank in sorted(set(ranks))
            ]
            return self._add_revision(s, assignment, self._latest(s, assignment.id), seconds, ranking=groups)

    @staticmethod
    def _add_revision(
        s: Session, assignment: Assignment, latest: Label | None, seconds: float, **answer: Any
    ) -> int:
        """Append the assignment's next label revision (nothing is overwritten) and mark it done."""
        label = Label(
            assignment_id=assignment.id,
            revision=1 if latest is None else latest.revision + 1,
            comparison_id=assignment.comparison_id,
            annotator_id=assignment.annotator_id,
            response_a_id=assignment.response_a_id,
            response_b_id=assignment.response_b_id,
            seconds=float(seconds),
            **answer,
        )
        s.add(label)
        assignment.status = "done"
        s.flush()
        return label.id

    def skip(self, annotator: str, assignment_id: int) -> None:
        """Set an assignment aside (it no longer comes up as next; its label, if any, stays)."""
        with self.transaction() as s:
            assignment = self._own_assignment(s, annotator, assignment_id, lock=True)
            if assignment.status == "pending":
                assignment.status = "skipped"

    def reject_label(self, admin: str, label_id: int, reason: str) -> None:
        """An admin marks one label revision rejected, with a reason; export leaves it out (a later
        revision by the annotator is a new label and counts again). PermissionError for anyone
        who is not an admin."""
        if not reason or not reason.strip():
            raise InputError("reject: give a reason")
        with self.transaction() as s:
            reviewer = s.scalar(select(Annotator).where(Annotator.name == admin))
            if reviewer is None or reviewer.role != "admin":
                raise PermissionError(f"{admin!r} is not an admin: only admins review labels")
            if s.get(Label, label_id) is None:
                raise InputError(f"reject: no label {label_id}")
            s.add(LabelReview(label_id=label_id, reviewer_id=reviewer.id, reason=reason.strip()))

    def label_count(self) -> int:
        """Labelled assignments (each counted once, however often it was revised), gold included."""
        with self.transaction() as s:
            return s.scalar(select(func.count(func.distinct(Label.assignment_id)))) or 0

    def recent_labels(self, annotator: str, limit: int = 20) -> list[RecentLabel]:
        """The annotator's own most recently labelled assignments, newest first (latest revisions)."""
        with self.transaction() as s:
            annotator_id = self._annotator_id(s, annotator)
            rows = s.scalars(
                select(Label).where(Label.annotator_id == annotator_id).order_by(Label.id.desc())
            ).all()
            latest: dict[int, Label] = {}
            for label in rows:
                latest.setdefault(label.assignment_id, label)
            picked = list(latest.values())[:limit]
            orders = dict(
                s.execute(
                    select(Assignment.id, Assignment.shown_order).where(
                        Assignment.id.in_([label.assignment_id for label in picked])
                    )
                ).all()
            )
            prompts = dict(
                s.execute(
                    select(Comparison.id, Prompt.messages)
                    .join(Prompt)
                    .where(Comparison.id.in_([label.comparison_id for label in picked]))
                ).all()
            )
            recent = []
            for label in picked:
                last_user = next(
                    m["content"] for m in reversed(prompts[label.comparison_id]) if m["role"] == "user"
                )
                shown = orders[label.assignment_id] or [label.response_a_id, label.response_b_id]
                recent.append(
                    RecentLabel(
                        assignment_id=label.assignment_id,
                        revision=label.revision,
                        labelled_at=label.created_at,
                        prompt=" ".join(last_user.split())[:80],
                        verdict=_verdict(label, shown),
                    )
                )
            return recent

    def label_history(self, assignment_id: int) -> list[LabelRevision]:
        """Every revision of the label of one assignment, oldest first (for admins and reports)."""
        with self.transaction() as s:
            rejected = self._rejections(s)
            annotators = dict(s.execute(select(Annotator.id, Annotator.name)).all())
            history = []
            for label in s.scalars(
                select(Label).where(Label.assignment_id == assignment_id).order_by(Label.revision)
            ):
                rewrite = None
                if label.rewrite_response_id is not None:
                    rewrite = s.scalar(select(Response.text).where(Response.id == label.rewrite_response_id))
                history.append(
                    LabelRevision(
                        label_id=label.id,
                        revision=label.revision,
                        annotator=annotators[label.annotator_id],
                        choices=None
                        if label.ranking is not None
                        else {c: getattr(label, c) for c in CRITERIA},
                        ranking=label.ranking,
                        rewrite=rewrite,
                        seconds=label.seconds,
                        created_at=label.created_at,
                        rejected=rejected.get(label.id),
                    )
                )
            return history

    @staticmethod
    def _rejections(s: Session) -> dict[int, str]:
        return dict(
            s.execute(select(LabelReview.label_id, LabelReview.reason).order_by(LabelReview.id)).all()
        )

    def _latest_labels(
        self, s: Session, include_gold: bool, include_rejected: bool
    ) -> list[tuple[Label, str | None]]:
        rejected = self._rejections(s)
        gold = set() if include_gold else set(s.scalars(select(Gold.comparison_id)))
        latest: dict[int, Label] = {}
        for label in s.scalars(select(Label).order_by(Label.assignment_id, Label.revision)):
            latest[label.assignment_id] = label
        picked = [
            (label, rejected.get(label.id))
            for label in sorted(latest.values(), key=lambda label: label.id)
            if label.comparison_id not in gold and (include_rejected or label.id not in rejected)
        ]
        return picked

    def labels(self, include_gold: bool = False, include_rejected: bool = False) -> list[LabelRecord]:
        """Every pair label (the latest revision of each), with its prompt, the two responses and the
        rewrite, in label id order. Gold items and labels an admin rejected are left out unless
        asked for; rankings are in `rankings()`."""
        with self.transaction() as s:
            annotators = dict(s.execute(select(Annotator.id, Annotator.name)).all())
            prompts = dict(s.execute(select(Comparison.id, Prompt.messages).join(Prompt)).all())
            texts = dict(s.execute(select(Response.id, Response.text)).all())
            return [
                LabelRecord(
                    label_id=label.id,
                    comparison_id=label.comparison_id,
                    annotator=annotators[label.annotator_id],
                    messages=prompts[label.comparison_id],
                    response_a_id=label.response_a_id,
                    response_b_id=label.response_b_id,
                    response_a=texts[label.response_a_id],
                    response_b=texts[label.response_b_id],
                    choices={c: getattr(label, c) for c in CRITERIA},
                    rewrite=None if label.rewrite_response_id is None else texts[label.rewrite_response_id],
                    seconds=label.seconds,
                    assignment_id=label.assignment_id,
                    revision=label.revision,
                    rejected=reason,
                )
                for label, reason in self._latest_labels(s, include_gold, include_rejected)
                if label.ranking is None
            ]

    def rankings(self, include_rejected: bool = False) -> list[RankingRecord]:
        """Every ranking (the latest revision of each), with the prompt and the responses' texts, in
        label id order; rejected ones are left out unless asked for."""
        with self.transaction() as s:
            annotators = dict(s.execute(select(Annotator.id, Annotator.name)).all())
            comparisons = {c.id: c for c in s.scalars(select(Comparison).where(Comparison.task == "rank"))}
            prompts = dict(s.execute(select(Comparison.id, Prompt.messages).join(Prompt)).all())
            texts = dict(s.execute(select(Response.id, Response.text)).all())
            return [
                RankingRecord(
                    label_id=label.id,
                    comparison_id=label.comparison_id,
                    annotator=annotators[label.annotator_id],
                    messages=prompts[label.comparison_id],
                    texts={i: texts[i] for i in comparisons[label.comparison_id].response_ids},
                    ranking=label.ranking,
                    seconds=label.seconds,
                    assignment_id=label.assignment_id,
                    revision=label.revision,
                    rejected=reason,
                )
                for label, reason in self._latest_labels(s, False, include_rejected)
                if label.ranking is not None
            ]

    def activity(self) -> list[AnnotatorActivity]:
        """Per annotator: labelled and skipped assignments, gold and attention-check results,
        edits, rejections and the time to label; in annotator order."""
        with self.transaction() as s:
            people = {
                i: AnnotatorActivity(n)
                for i, n in s.execute(select(Annotator.id, Annotator.name).order_by(Annotator.id))
            }
            for annotator_id, count in s.execute(
                select(Assignment.annotator_id, func.count())
                .where(Assignment.status == "skipped")
                .group_by(Assignment.annotator_id)
            ):
                people[annotator_id].skipped = count
            gold = {g.comparison_id: g for g in s.scalars(select(Gold))}
            rejected = self._rejections(s)
            first: dict[int, Label] = {}
            latest: dict[int, Label] = {}
            for label in s.scalars(select(Label).order_by(Label.assignment_id, Label.revision)):
                first.setdefault(label.assignment_id, label)
                latest[label.assignment_id] = label
            for assignment_id, label in latest.items():
                person = people[label.annotator_id]
                person.labelled += 1
                person.edits += label.revision - 1
                person.rejected += label.id in rejected
                person.seconds.append(first[assignment_id].seconds)
                item = gold.get(label.comparison_id)
                if item is not None:
                    picked = {"A": label.response_a_id, "B": label.response_b_id}.get(label.overall or "")
                    correct = picked == item.chosen_id
                    if item.kind == "gold":
                        person.gold += 1
                        person.gold_correct += correct
                    else:
                        person.attention += 1
                        person.attention_passed += correct
            return list(people.values())


def render_messages(messages: list[dict[str, str]]) -> str:
    """A conversation as plain text for display (role headers, blank lines between turns)."""
    return "\n\n".join(f"[{m['role']}]\n{m['content']}" for m in messages)

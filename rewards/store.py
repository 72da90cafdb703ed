"""The preference store: prompts, responses, comparisons, labels, annotators and assignments in SQL.

SQLite is the embedded default (WAL journal, `synchronous=FULL`, one `BEGIN IMMEDIATE`
transaction per label, so an accepted label survives a crash of the app); any SQLAlchemy URL
(e.g. `postgresql+psycopg://...`) works for a team sharing one database.

The model, in short: a *prompt* is a conversation (a list of `{"role", "content"}` messages); a
*response* answers one prompt and comes from a model (name + checkpoint) or a person; a
*comparison* groups two or more responses to one prompt; an *assignment* gives a comparison to one
annotator, with the pair to show and its randomised order fixed when it is assigned; a *label* is an
annotator's verdict on an assignment, per criterion (helpful, harmless, honest, overall), each one
of `A`, `B`, `tie`, `both_bad`, where A and B are the assignment's shown order.

Every write goes through `PreferenceStore`; the Gradio app, the programmatic judge and the
importers use the same methods, and each method that writes is one transaction.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import random
import secrets
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from sqlalchemy import (
    JSON,
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
from rewards.label_config import CRITERIA
from rewards.messages import prompt_problem

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
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=_now)


class Assignment(Base):
    __tablename__ = "assignments"
    __table_args__ = (UniqueConstraint("comparison_id", "annotator_id"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    comparison_id: Mapped[int] = mapped_column(ForeignKey("comparisons.id"), index=True)
    annotator_id: Mapped[int] = mapped_column(ForeignKey("annotators.id"), index=True)
    response_a_id: Mapped[int] = mapped_column(ForeignKey("responses.id"))
    response_b_id: Mapped[int] = mapped_column(ForeignKey("responses.id"))
    status: Mapped[str] = mapped_column(String(10), default="pending")
    """pending, done or skipped."""
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=_now)


class Label(Base):
    __tablename__ = "labels"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    assignment_id: Mapped[int] = mapped_column(ForeignKey("assignments.id"), unique=True)
    """At most one label per assignment: a resubmission revises it instead of adding a row."""
    comparison_id: Mapped[int] = mapped_column(ForeignKey("comparisons.id"), index=True)
    annotator_id: Mapped[int] = mapped_column(ForeignKey("annotators.id"), index=True)
    response_a_id: Mapped[int] = mapped_column(ForeignKey("responses.id"))
    response_b_id: Mapped[int] = mapped_column(ForeignKey("responses.id"))
    helpful: Mapped[str] = mapped_column(String(10))
    harmless: Mapped[str] = mapped_column(String(10))
    honest: Mapped[str] = mapped_column(String(10))
    overall: Mapped[str] = mapped_column(String(10))
    rewrite_response_id: Mapped[int | None] = mapped_column(ForeignKey("responses.id"))
    seconds: Mapped[float] = mapped_column(Float, default=0.0)
    """Time from showing the comparison to submitting the label."""
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=_now)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=_now)


@dataclass(frozen=True)
class Task:
    """One assignment as an annotator sees it."""

    assignment_id: int
    comparison_id: int
    messages: list[dict[str, str]]
    response_a: str
    response_b: str


@dataclass(frozen=True)
class LabelRecord:
    """A stored label, joined with what an export or agreement needs."""

    label_id: int
    comparison_id: int
    annotator: str
    messages: list[dict[str, str]]
    response_a_id: int
    response_b_id: int
    response_a: str
    response_b: str
    choices: dict[str, str]
    rewrite: str | None
    seconds: float


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


class PreferenceStore:
    """All reads and writes of preference data; each writing method is one transaction."""

    def __init__(self, url: str, create: bool = True) -> None:
        """Open the store at `url` (a SQLAlchemy URL). `create`: make it (and its tables) when it
        does not exist; a command that only reads (export, stats) passes False, so a typo in the
        URL is an error instead of a new, empty store."""
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
            if create:
                Base.metadata.create_all(self.engine)
            else:
                missing = set(Base.metadata.tables) - set(inspect(self.engine).get_table_names())
                if missing:
                    raise InputError(f"store: {url} is not a label store (no table {sorted(missing)[0]!r})")
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
        self, items: Sequence[tuple[list[dict[str, str]], Sequence[dict[str, Any]]]]
    ) -> list[int]:
        """Add prompts with their responses, one comparison per prompt, in one transaction.

        Each response is `{"text", "model"?, "checkpoint"?}`; at least two per prompt. A comparison
        already in the store (same conversation, same response texts) is not added again, so an
        interrupted `align label add` can simply be re-run. Returns the ids of the added ones.
        """
        ids = []
        with self.transaction() as s:
            texts = dict(s.execute(select(Response.id, Response.text)).all())
            seen = {
                _comparison_key(messages, [texts[i] for i in response_ids])
                for messages, response_ids in s.execute(
                    select(Prompt.messages, Comparison.response_ids).join(Comparison)
                )
            }
            for n, (messages, responses) in enumerate(items):
                if len(responses) < 2:
                    raise InputError(f"comparison {n}: needs at least two responses, got {len(responses)}")
                key = _comparison_key(messages, [r["text"] for r in responses])
                if key in seen:
                    continue
                seen.add(key)
                prompt = Prompt(messages=messages)
                s.add(prompt)
                s.flush()
                rows = [
                    Response(
                        prompt_id=prompt.id,
                        text=r["text"],
                        model=r.get("model"),
                        checkpoint=r.get("checkpoint"),
                    )
                    for r in responses
                ]
                s.add_all(rows)
                s.flush()
                comparison = Comparison(prompt_id=prompt.id, response_ids=[r.id for r in rows])
                s.add(comparison)
                s.flush()
                ids.append(comparison.id)
        return ids

    def comparison_count(self) -> int:
        with self.transaction() as s:
            return s.scalar(select(func.count(Comparison.id))) or 0

    # --- assignments

    def assign(
        self,
        overlap: int = 1,
        annotators: Sequence[str] | None = None,
        seed: int = 0,
        comparisons: Sequence[int] | None = None,
    ) -> int:
        """Give each comparison to `overlap` annotators, balancing the load; returns new assignments.

        `annotators` and `comparisons` (ids) restrict who gets work and which work (default: all).
        Comparisons already assigned to enough of those annotators are left alone, so re-running after adding
        data assigns only the new work. The pair shown (for comparisons of more than two responses)
        is the same for every annotator of a comparison, so their labels can be compared; the A/B
        order is drawn per annotator.
        """
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
            load = {i: 0 for i, _ in people}
            have: dict[int, set[int]] = {}
            for comparison_id, annotator_id in s.execute(
                select(Assignment.comparison_id, Assignment.annotator_id)
            ):
                have.setdefault(comparison_id, set()).add(annotator_id)
                if annotator_id in load:
                    load[annotator_id] += 1
            created = 0
            query = select(Comparison).order_by(Comparison.id)
            if comparisons is not None:
                query = query.where(Comparison.id.in_(list(comparisons)))
            for comparison in s.scalars(query):
                taken = have.get(comparison.id, set())
                need = overlap - len(taken & set(load))
                if need <= 0:
                    continue
                pair = self._pair(s, comparison)
                free = sorted((i for i in load if i not in taken), key=lambda i: (load[i], i))
                for annotator_id in free[:need]:
                    a, b = pair if rng.random() < 0.5 else pair[::-1]
                    s.add(
                        Assignment(
                            comparison_id=comparison.id,
                            annotator_id=annotator_id,
                            response_a_id=a,
                            response_b_id=b,
                        )
                    )
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
        """One of the annotator's own assignments (e.g. to revise its label)."""
        with self.transaction() as s:
            return self._task(s, self._own_assignment(s, annotator, assignment_id))

    def _task(self, s: Session, assignment: Assignment) -> Task:
        comparison = s.get(Comparison, assignment.comparison_id)
        assert comparison is not None
        prompt = s.get(Prompt, comparison.prompt_id)
        a, b = s.get(Response, assignment.response_a_id), s.get(Response, assignment.response_b_id)
        assert prompt is not None and a is not None and b is not None
        return Task(assignment.id, comparison.id, prompt.messages, a.text, b.text)

    def _own_assignment(self, s: Session, annotator: str, assignment_id: int) -> Assignment:
        annotator_id = self._annotator_id(s, annotator)
        assignment = s.get(Assignment, assignment_id)
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
        """Store (or revise) the annotator's label for one of their assignments; one transaction.

        `choices` maps every criterion to A, B, tie or both_bad. A non-empty `rewrite` is stored
        as a new response written by the annotator. Raises PermissionError for an assignment that
        is not the annotator's: nobody can write or change another annotator's label.
        """
        missing = [c for c in CRITERIA if c not in choices]
        bad = {c: v for c, v in choices.items() if c not in CRITERIA or v not in CHOICES}
        if missing or bad:
            raise InputError(
                f"label: needs each of {', '.join(CRITERIA)} set to one of {', '.join(CHOICES)}; "
                f"missing {missing}, invalid {bad}"
            )
        with self.transaction() as s:
            assignment = self._own_assignment(s, annotator, assignment_id)
            rewrite_id = None
            if rewrite and rewrite.strip():
                comparison = s.get(Comparison, assignment.comparison_id)
                assert comparison is not None
                row = Response(
                    prompt_id=comparison.prompt_id, text=rewrite, annotator_id=assignment.annotator_id
                )
                s.add(row)
                s.flush()
                rewrite_id = row.id
            label = s.scalar(select(Label).where(Label.assignment_id == assignment.id))
            if label is None:
                label = Label(
                    assignment_id=assignment.id,
                    comparison_id=assignment.comparison_id,
                    annotator_id=assignment.annotator_id,
                    response_a_id=assignment.response_a_id,
                    response_b_id=assignment.response_b_id,
                )
                s.add(label)
            for criterion in CRITERIA:
                setattr(label, criterion, choices[criterion])
            label.rewrite_response_id = rewrite_id
            label.seconds = float(seconds)
            label.updated_at = _now()
            assignment.status = "done"
            s.flush()
            return label.id

    def skip(self, annotator: str, assignment_id: int) -> None:
        """Set an assignment aside (it no longer comes up as next; its label, if any, stays)."""
        with self.transaction() as s:
            assignment = self._own_assignment(s, annotator, assignment_id)
            if assignment.status == "pending":
                assignment.status = "skipped"

    def label_count(self) -> int:
        with self.transaction() as s:
            return s.scalar(select(func.count(Label.id))) or 0

    def labels(self) -> list[LabelRecord]:
        """Every label with its prompt, the two responses and the rewrite, in label id order."""
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
                )
                for label in s.scalars(select(Label).order_by(Label.id))
            ]


def render_messages(messages: list[dict[str, str]]) -> str:
    """A conversation as plain text for display (role headers, blank lines between turns)."""
    return "\n\n".join(f"[{m['role']}]\n{m['content']}" for m in messages)

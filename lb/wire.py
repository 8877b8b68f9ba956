"""The bus's wire protocol: every message between the supervisor and its workers, typed.

Owns: the message types of both directions, the stats snapshot, and their encoding. Never
does: framing or I/O (``lb/bus.py`` frames the bytes and moves them), or act on a message.

Theory of operation
-------------------
A message is a frozen, slotted dataclass (the counters inside a stats snapshot are
TypedDicts: see there). ``encode`` turns one into the body of a bus frame: an orjson object
whose ``"type"`` names the message (``TYPE``), followed by its fields.
Supervisor-to-worker frames also carry ``"seq"``: the supervisor stamps every frame it sends
with a sequence number (``ControlPlane.broadcast``), the worker remembers the last one it
applied, and its stats snapshots echo it, which is how the supervisor knows that a drain
reached a worker (``lb/control/drain.py``). The sequence number is transport, so it travels
beside the message, not in it.

Each direction has its own decoder, ``decode_to_worker`` and ``decode_to_supervisor``. They
check the whole frame against the types below before anything acts on it: an unknown
``type`` (or one that belongs to the other direction), a missing or unexpected field, or a
value of the wrong type raises ``WireError``, whose message names the message type and the
field path. Both ends are the same installation, so a bad frame is a bug to report, never
something to guess around.

``workers = 0`` sends the same bytes through ``LocalBus``, so both transports deliver values
that went through ``encode`` and a decoder.

Supervisor -> worker (``ToWorker``):
  ``NewConfig``      "config"        the validated config (first frame, and on reload)
  ``PoolsSnapshot``  "pools"         every pool's backends, whole (after a config; on start)
  ``BackendUpdate``  "backend"       one backend added or changed
  ``RemoveBackend``  "remove"        one backend removed
  ``CloseBackend``   "close_backend" abort what still uses a backend (drain_timeout expired,
                                     or a forced delete)

Worker -> supervisor (``ToSupervisor``):
  ``Ready``    "ready"    its listeners are bound
  ``Fatal``    "fatal"    it cannot run (a listener cannot be bound); it exits
  ``Stats``    "stats"    counter snapshot: about once a second, and at once when a drain is
                          applied or a draining backend's last connection closes
  ``Failure``  "failure"  a backend failed real traffic (passive health)
  ``Success``  "success"  a backend succeeded after failures this worker reported
"""

from __future__ import annotations

import dataclasses
import enum
import operator
import types
import typing
from collections.abc import Callable, ItemsView, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, TypedDict, cast

import orjson
from pydantic import BaseModel, ValidationError

from lb.config import Config
from lb.model import AdminState, HealthState

__all__ = [
    "BackendCounters",
    "BackendEntry",
    "BackendUpdate",
    "CloseBackend",
    "EntryColumns",
    "Failure",
    "Fatal",
    "ListenerCounters",
    "NewConfig",
    "PoolsSnapshot",
    "Ready",
    "RemoveBackend",
    "Stats",
    "Success",
    "ToSupervisor",
    "ToWorker",
    "WireError",
    "counter_items",
    "counters_of",
    "decode_to_supervisor",
    "decode_to_worker",
    "encode",
]


class WireError(ValueError):
    """A frame that is not a valid message. ``path`` is the field path inside the message."""

    def __init__(self, reason: str, path: tuple[str, ...] = (), message_type: str = "") -> None:
        self.reason = reason
        self.path = path
        self.message_type = message_type
        super().__init__(str(self))

    def at(self, segment: str) -> WireError:
        return WireError(self.reason, (segment, *self.path), self.message_type)

    def of(self, message_type: str) -> WireError:
        return WireError(self.reason, self.path, message_type)

    def __str__(self) -> str:
        where = f"bus message {self.message_type!r}" if self.message_type else "bus message"
        if self.path:
            where += f", field {'.'.join(self.path)}"
        return f"{where}: {self.reason}"


# -- the backend entry: how a backend travels to the workers ---------------------------------


@dataclass(frozen=True, slots=True)
class BackendEntry:
    """A backend as the workers receive it (``PoolRuntime`` applies these)."""

    id: str
    address: str
    weight: int
    effective_weight: float  # what strategies use (below ``weight`` during slow start)
    admin: AdminState = AdminState.READY
    health: HealthState = HealthState.UP
    ejected: bool = False  # passive health took it out of rotation (computed when sent)
    max_conn: int = 0  # the backend's limit for all workers together (0: none); split by each


_ENTRY_FIELDS = tuple(f.name for f in dataclasses.fields(BackendEntry))


class EntryColumns(Sequence[BackendEntry]):
    """A snapshot's pool as a worker decodes it: the entries' fields by column (checked by
    the decoder), each ``BackendEntry`` made when it is read.

    A snapshot of 10,000 backends is decoded on the worker's loop: making its 10,000 entries
    there costs about 12 ms in one go, while the pool that applies it reads them a few dozen
    at a time, in slices (``PoolRuntime.apply_snapshot``). So they are made there, as read.
    Equal to any sequence of the same entries (a tuple of them, as the supervisor builds)."""

    __slots__ = ("_columns", "_count")

    def __init__(self, *columns: list[Any]) -> None:
        if len(columns) != len(_ENTRY_FIELDS) or len(set(map(len, columns))) > 1:
            raise ValueError("one column per BackendEntry field, all as long")
        self._columns = columns
        self._count = len(columns[0])

    @classmethod
    def of(cls, entries: Sequence[BackendEntry]) -> EntryColumns:
        """The columns of ``entries`` (those of an ``EntryColumns`` as they are)."""
        if isinstance(entries, EntryColumns):
            return entries
        return cls(*(list(map(operator.attrgetter(name), entries)) for name in _ENTRY_FIELDS))

    def columns(self) -> dict[str, list[Any]]:
        """Field name -> its column: how a snapshot's pool goes on the wire."""
        return dict(zip(_ENTRY_FIELDS, self._columns, strict=True))

    def __len__(self) -> int:
        return self._count

    @typing.overload
    def __getitem__(self, index: int) -> BackendEntry: ...

    @typing.overload
    def __getitem__(self, index: slice) -> tuple[BackendEntry, ...]: ...

    def __getitem__(self, index: int | slice) -> BackendEntry | tuple[BackendEntry, ...]:
        if isinstance(index, slice):
            return tuple(map(BackendEntry, *(column[index] for column in self._columns)))
        return BackendEntry(*(column[index] for column in self._columns))

    def __iter__(self) -> Iterator[BackendEntry]:
        return map(BackendEntry, *self._columns)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Sequence) or isinstance(other, str | bytes):
            return NotImplemented
        return len(other) == self._count and all(map(operator.eq, self, other))

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"EntryColumns({self._count} entries)"


# -- supervisor -> worker --------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class NewConfig:
    TYPE: ClassVar[str] = "config"
    config: Config


@dataclass(frozen=True, slots=True)
class PoolsSnapshot:
    """Every pool's backends. A pool missing here keeps what it has (none in practice).

    On the wire each pool is an object of columns, one array per field of ``BackendEntry``
    (``EntryColumns``): a third of the bytes of one object per entry, and decoded several
    times faster, since a worker decodes the whole frame in one go on its loop."""

    TYPE: ClassVar[str] = "pools"
    pools: Mapping[str, Sequence[BackendEntry]]


@dataclass(frozen=True, slots=True)
class BackendUpdate:
    TYPE: ClassVar[str] = "backend"
    pool: str
    backend: BackendEntry


@dataclass(frozen=True, slots=True)
class RemoveBackend:
    TYPE: ClassVar[str] = "remove"
    pool: str
    id: str


@dataclass(frozen=True, slots=True)
class CloseBackend:
    TYPE: ClassVar[str] = "close_backend"
    pool: str
    id: str


ToWorker = NewConfig | PoolsSnapshot | BackendUpdate | RemoveBackend | CloseBackend


# -- the stats snapshot ----------------------------------------------------------------------
# The counters are TypedDicts, not dataclasses: a worker writes one per backend every second,
# and plain dicts cost a fraction of slotted dataclasses to build and to serialize (a
# snapshot of 1000 backends: about 0.5 ms against 8 ms). They are just as checked: by mypy
# where they are built and read, and by the decoder on the wire.


class _ListenerAlways(TypedDict):
    accepted: int
    active: int  # gauge: client connections open now
    rejected: int  # refused at max_connections
    connect_failures: int
    no_backend: int  # tcp: closed because no backend could be reached
    idle_timeouts: int
    bytes_in: int
    bytes_out: int


class ListenerCounters(_ListenerAlways, total=False):
    """One listener's counters in one worker, cumulative since the worker started (``active``
    is a gauge). The keys below are sent by http listeners only."""

    requests: int
    retries: int
    responses_1xx: int  # answers to clients by status class (lb's own included)
    responses_2xx: int
    responses_3xx: int
    responses_4xx: int
    responses_5xx: int
    # Listeners with TLS or PROXY protocol (lb/proxy/edge.py): handshakes by version, resumed
    # sessions, handshake failures by reason (lb.tls.FAILURE_REASONS), PROXY refusals by reason.
    tls_handshakes_tlsv1_2: int
    tls_handshakes_tlsv1_3: int
    tls_resumed: int
    tls_failures_timeout: int
    tls_failures_closed: int
    tls_failures_not_tls: int
    tls_failures_protocol_version: int
    tls_failures_no_shared_cipher: int
    tls_failures_client_certificate: int
    tls_failures_alert: int
    tls_failures_other: int
    proxy_rejected_untrusted: int
    proxy_rejected_missing: int
    proxy_rejected_invalid: int
    proxy_rejected_too_long: int
    proxy_rejected_timeout: int


class _BackendAlways(TypedDict):
    active: int  # gauge: open connections (L4) or in-flight requests (L7)
    total: int  # connections established (L4) or requests sent (L7)
    connect_failures: int  # failed attempts, not in ``total``
    errors: int  # L7: 5xx answers to requests counted in ``total``
    bytes_in: int
    bytes_out: int
    retries: int  # failed here before reaching it, retried on another backend
    responses_1xx: int  # L7: responses by status class
    responses_2xx: int
    responses_3xx: int
    responses_4xx: int
    responses_5xx: int
    latency_us: int  # the latency histogram's sum, in microseconds


class BackendCounters(_BackendAlways, total=False):
    """One backend's counters in one worker, cumulative since the worker started, except the
    gauges ``active`` and ``connections``."""

    # Gauge, optional: open upstream connections, pooled idle ones included. Without it,
    # ``active`` stands for them.
    connections: int


class PoolCounters(TypedDict):
    """One pool's queue and budget figures in one worker (``lb/proxy/pool.py``): gauges
    (``in_flight``, ``queued``, ``held``) and counters cumulative since the worker started."""

    in_flight: int  # gauge: requests (http) or connections (tcp) holding a backend
    queued: int  # gauge: waiting for a backend below its max_conn
    held: int  # gauge: waiting because no backend is eligible
    queue_full: int  # refused (503 / closed): the queue was full
    queue_timeouts: int  # waited queue_timeout for a slot, then refused
    hold_timeouts: int  # held hold_timeout, then refused
    waited: int  # served after waiting
    wait_us: int  # the waits' histogram's sum, in microseconds
    retry_budget_exhausted: int  # retries the budget refused


def counters_of(counters: ListenerCounters | BackendCounters | PoolCounters) -> Mapping[str, int]:
    """The counters as a mapping of names to ints (what they are: the decoder checks it), for
    code that reads them by a name it holds in a variable."""
    return cast("Mapping[str, int]", counters)


def counter_items(
    counters: ListenerCounters | BackendCounters | PoolCounters,
) -> ItemsView[str, int]:
    """(name, value) of every counter."""
    return counters_of(counters).items()


# -- worker -> supervisor --------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Ready:
    TYPE: ClassVar[str] = "ready"
    worker: int


@dataclass(frozen=True, slots=True)
class Fatal:
    TYPE: ClassVar[str] = "fatal"
    worker: int
    error: str


@dataclass(frozen=True, slots=True)
class Stats:
    """A worker's counter snapshot (consumers: ``lb/control/aggregate.py``,
    ``lb/control/metrics.py``, ``lb/control/drain.py``, the API's views).

    ``seq`` is the last supervisor sequence number the worker had applied when it took the
    snapshot. ``latency`` holds upstream response-time histograms (L7): counts per bucket of
    ``lb.histogram.LATENCY_BOUNDS`` plus a last bucket for anything slower, cumulative since the
    worker started; backends without a sample may be left out. ``queues`` has each pool's
    queue figures, ``queue_wait`` the histogram of waits in its queue (the same buckets)."""

    TYPE: ClassVar[str] = "stats"
    worker: int
    seq: int = 0
    listeners: Mapping[str, ListenerCounters] = field(default_factory=dict)
    pools: Mapping[str, Mapping[str, BackendCounters]] = field(default_factory=dict)
    latency: Mapping[str, Mapping[str, tuple[int, ...]]] = field(default_factory=dict)
    queues: Mapping[str, PoolCounters] = field(default_factory=dict)
    queue_wait: Mapping[str, tuple[int, ...]] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Demand:
    """A pool's demand in one worker changed enough to matter to a scaler (left zero,
    more than doubled); sent at once, between stats snapshots. Each value
    is ``(in_flight, queued, held)``."""

    TYPE: ClassVar[str] = "demand"
    worker: int
    pools: Mapping[str, tuple[int, ...]]  # (in_flight, queued, held)


@dataclass(frozen=True, slots=True)
class Failure:
    """A backend failed real traffic: ``kind`` is "connect", "reset" (before a response),
    "timeout" (no response in time) or "5xx"; ``error`` says what failed, for the log."""

    TYPE: ClassVar[str] = "failure"
    worker: int
    pool: str
    id: str
    kind: str
    error: str = ""


@dataclass(frozen=True, slots=True)
class Success:
    """The backend succeeded after ``after`` failures that this worker reported."""

    TYPE: ClassVar[str] = "success"
    worker: int
    pool: str
    id: str
    after: int


ToSupervisor = Ready | Fatal | Stats | Demand | Failure | Success

Message = ToWorker | ToSupervisor


# -- encoding --------------------------------------------------------------------------------


def _default(obj: Any) -> Any:
    if isinstance(obj, BaseModel):
        return obj.model_dump(mode="json")
    if isinstance(obj, Mapping):
        return dict(obj)
    raise TypeError(f"{type(obj).__name__} cannot go on the bus")


def encode(msg: Message, seq: int | None = None) -> bytes:
    """The frame body for ``msg`` (``seq``: supervisor-to-worker frames only)."""
    doc: dict[str, Any] = {"type": msg.TYPE}
    if seq is not None:
        doc["seq"] = seq
    if type(msg) is PoolsSnapshot:
        doc["pools"] = {name: EntryColumns.of(e).columns() for name, e in msg.pools.items()}
    else:
        for name in _FIELDS[type(msg)]:
            doc[name] = getattr(msg, name)
    # orjson writes the dataclasses, enums, tuples and dicts inside natively.
    return orjson.dumps(doc, default=_default)


# -- decoding --------------------------------------------------------------------------------

Reader = Callable[[Any], Any]


def _describe(value: Any) -> str:
    text = repr(value)
    return f"{type(value).__name__} {text if len(text) <= 40 else text[:37] + '...'}"


def _read_int(value: Any) -> int:
    if type(value) is not int:
        raise WireError(f"expected an integer, got {_describe(value)}")
    return value


def _read_float(value: Any) -> float:
    if type(value) is float:
        return value
    if type(value) is int:
        return float(value)
    raise WireError(f"expected a number, got {_describe(value)}")


def _read_str(value: Any) -> str:
    if type(value) is not str:
        raise WireError(f"expected a string, got {_describe(value)}")
    return value


def _read_bool(value: Any) -> bool:
    if type(value) is not bool:
        raise WireError(f"expected true or false, got {_describe(value)}")
    return value


def _enum_reader(cls: type[enum.Enum]) -> Reader:
    allowed = ", ".join(str(m.value) for m in cls)

    def read(value: Any) -> enum.Enum:
        try:
            return cls(value)
        except ValueError:
            raise WireError(f"expected one of {allowed}, got {_describe(value)}") from None

    return read


def _model_reader(cls: type[BaseModel]) -> Reader:
    def read(value: Any) -> BaseModel:
        try:
            return cls.model_validate(value)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"]) or "(top)"
            raise WireError(f"invalid {cls.__name__} at {where}: {first['msg']}") from None

    return read


def _mapping_reader(item: Reader) -> Reader:
    def read(value: Any) -> dict[str, Any]:
        if type(value) is not dict:
            raise WireError(f"expected an object, got {_describe(value)}")
        out = {}
        for k, v in value.items():
            try:
                out[k] = item(v)
            except WireError as exc:
                raise exc.at(k) from None
        return out

    return read


def _tuple_reader(item: Reader) -> Reader:
    def read(value: Any) -> tuple[Any, ...]:
        if type(value) is not list:
            raise WireError(f"expected an array, got {_describe(value)}")
        if item is _read_int:  # the latency histograms: the common case, kept tight
            for i, v in enumerate(value):
                if type(v) is not int:
                    raise WireError(f"expected an integer, got {_describe(v)}").at(str(i))
            return tuple(value)
        out = []
        for i, v in enumerate(value):
            try:
                out.append(item(v))
            except WireError as exc:
                raise exc.at(str(i)) from None
        return tuple(out)

    return read


def _optional_reader(item: Reader) -> Reader:
    def read(value: Any) -> Any:
        return None if value is None else item(value)

    return read


_READERS: dict[Any, Reader] = {int: _read_int, float: _read_float, str: _read_str, bool: _read_bool}


def _reader(tp: Any) -> Reader:
    found = _READERS.get(tp)
    if found is not None:
        return found
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        reader = _enum_reader(tp)
    elif isinstance(tp, type) and issubclass(tp, BaseModel):
        reader = _model_reader(tp)
    elif isinstance(tp, type) and dataclasses.is_dataclass(tp):
        reader = _dataclass_reader(tp)
    elif typing.is_typeddict(tp):
        reader = _typeddict_reader(tp)
    elif origin in (Mapping, dict) and args[0] is str:
        reader = _mapping_reader(_reader(args[1]))
    elif origin is tuple and len(args) == 2 and args[1] is Ellipsis:
        reader = _tuple_reader(_reader(args[0]))
    elif origin in (types.UnionType, typing.Union) and len(args) == 2 and type(None) in args:
        reader = _optional_reader(_reader(next(a for a in args if a is not type(None))))
    else:
        raise TypeError(f"no wire reader for {tp!r}")
    _READERS[tp] = reader
    return reader


def _keys_error(value: dict[Any, Any], required: frozenset[str], allowed: frozenset[str]) -> None:
    unknown = [str(k) for k in value if k not in allowed]
    if unknown:
        raise WireError(f"unexpected field(s) {', '.join(sorted(unknown))}")
    missing = [k for k in required if k not in value]
    if missing:
        raise WireError(f"missing field(s) {', '.join(sorted(missing))}")


def _typeddict_reader(cls: Any) -> Reader:
    hints = typing.get_type_hints(cls)
    readers = {name: _reader(tp) for name, tp in hints.items()}
    required: frozenset[str] = cls.__required_keys__
    allowed = frozenset(hints)
    only_ints = all(r is _read_int for r in readers.values())

    def read(value: Any) -> dict[str, Any]:
        if type(value) is not dict:
            raise WireError(f"expected an object, got {_describe(value)}")
        keys = value.keys()
        if not (required <= keys and keys <= allowed):
            _keys_error(value, required, allowed)
        if only_ints:
            # The counters of a stats snapshot, one per backend per second: one pass, no copy.
            for v in value.values():
                if type(v) is not int:
                    break
            else:
                return value
        out = {}
        for k, v in value.items():
            try:
                out[k] = readers[k](v)
            except WireError as exc:
                raise exc.at(k) from None
        return out

    return read


def _dataclass_reader(cls: type[Any]) -> Reader:
    hints = typing.get_type_hints(cls)
    fields = [
        (
            f.name,
            _reader(hints[f.name]),
            f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING,
        )
        for f in dataclasses.fields(cls)
    ]
    names = frozenset(name for name, _, _ in fields)
    required = [name for name, _, needed in fields if needed]

    def read(value: Any) -> Any:
        if type(value) is not dict:
            raise WireError(f"expected an object, got {_describe(value)}")
        if not names.issuperset(value):
            unknown = ", ".join(sorted(str(k) for k in value if k not in names))
            raise WireError(f"unexpected field(s) {unknown}")
        kwargs = {}
        for name, read_field, _ in fields:
            if name in value:
                try:
                    kwargs[name] = read_field(value[name])
                except WireError as exc:
                    raise exc.at(name) from None
        if len(kwargs) < len(required):
            missing = ", ".join(name for name in required if name not in kwargs)
            raise WireError(f"missing field(s) {missing}")
        return cls(**kwargs)

    return read


def _column(name: str, tp: Any, values: Any) -> list[Any]:
    """One column of a snapshot's pool (``EntryColumns``), checked with a few passes in C
    (the set of the values' types, the set of an enum's values): 10,000 values in about
    0.2 ms. Anything unusual goes through the generic reader of the field's type, value by
    value, so that the error names the column and the index of the first bad value, with the
    reason any field of that type gives."""
    if type(values) is not list:
        raise WireError(f"expected an array, got {_describe(values)}").at(name)
    kinds = set(map(type, values))
    if tp is float:
        if kinds <= {float}:
            return values
        if kinds <= {float, int}:
            return list(map(float, values))
    elif isinstance(tp, type) and issubclass(tp, enum.Enum):
        table = _ENUM_VALUES[tp]
        if kinds <= {str} and table.keys() >= set(values):
            return list(map(table.__getitem__, values))
    elif kinds <= {tp}:
        return values
    read = _reader(tp)
    for i, v in enumerate(values):
        try:
            read(v)
        except WireError as exc:
            raise exc.at(str(i)).at(name) from None
    return list(map(read, values))  # (not reached: some value above was refused)


_ENUM_VALUES: dict[type[enum.Enum], dict[str, enum.Enum]] = {
    cls: {str(m.value): m for m in cls} for cls in (AdminState, HealthState)
}


def _columns_reader() -> Reader:
    """``Sequence[BackendEntry]``, a snapshot's pool: an object of columns, one array per
    field of ``BackendEntry``, all as long (``EntryColumns``). The columns are checked here,
    whole, so a bad frame is refused before anything acts on it (``WireError`` naming the
    column and the index, as ``pools.web.weight.3``); the entries are made later, as they
    are read, so that a worker makes them in the slices it applies the snapshot in."""
    hints = typing.get_type_hints(BackendEntry)
    fields = dataclasses.fields(BackendEntry)
    names = tuple(f.name for f in fields)
    allowed = frozenset(names)
    required = frozenset(f.name for f in fields if f.default is dataclasses.MISSING)
    defaults = {f.name: f.default for f in fields if f.default is not dataclasses.MISSING}

    def read(value: Any) -> EntryColumns:
        if type(value) is not dict:
            raise WireError(f"expected an object, got {_describe(value)}")
        _keys_error(value, required, allowed)  # raises only when a key is wrong
        count = len(value[names[0]]) if type(value[names[0]]) is list else 0
        columns = []
        for name in names:
            if name not in value:
                columns.append([defaults[name]] * count)
                continue
            column = _column(name, hints[name], value[name])
            if len(column) != count:
                raise WireError(
                    f"expected {count} values (one per {names[0]}), got {len(column)}"
                ).at(name)
            columns.append(column)
        return EntryColumns(*columns)

    return read


_READERS[Sequence[BackendEntry]] = _columns_reader()

_TO_WORKER: tuple[type[ToWorker], ...] = (
    NewConfig,
    PoolsSnapshot,
    BackendUpdate,
    RemoveBackend,
    CloseBackend,
)
_TO_SUPERVISOR: tuple[type[ToSupervisor], ...] = (Ready, Fatal, Stats, Demand, Failure, Success)
_FIELDS: dict[type[Any], tuple[str, ...]] = {
    cls: tuple(f.name for f in dataclasses.fields(cls)) for cls in (*_TO_WORKER, *_TO_SUPERVISOR)
}
_WORKER_READERS: dict[str, Reader] = {cls.TYPE: _dataclass_reader(cls) for cls in _TO_WORKER}
_SUPERVISOR_READERS: dict[str, Reader] = {
    cls.TYPE: _dataclass_reader(cls) for cls in _TO_SUPERVISOR
}


def _load(body: bytes) -> dict[str, Any]:
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise WireError(f"not JSON: {exc}") from None
    if type(doc) is not dict:
        raise WireError(f"expected an object, got {_describe(doc)}")
    return doc


def _decode(doc: dict[str, Any], readers: Mapping[str, Reader], direction: str) -> Any:
    kind = doc.pop("type", None)
    read = readers.get(kind) if type(kind) is str else None
    if read is None:
        raise WireError(
            f"unknown message type {kind!r} {direction}; known: {', '.join(sorted(readers))}"
        )
    try:
        return read(doc)
    except WireError as exc:
        raise exc.of(kind) from None


def decode_to_worker(body: bytes) -> tuple[int, ToWorker]:
    """A supervisor-to-worker frame body: (its sequence number, the message)."""
    doc = _load(body)
    seq = doc.pop("seq", None)
    msg: ToWorker = _decode(doc, _WORKER_READERS, "from the supervisor")
    if type(seq) is not int:
        raise WireError(f"expected an integer, got {_describe(seq)}", ("seq",), msg.TYPE)
    return seq, msg


def decode_to_supervisor(body: bytes) -> ToSupervisor:
    """A worker-to-supervisor frame body."""
    msg: ToSupervisor = _decode(_load(body), _SUPERVISOR_READERS, "from a worker")
    return msg

"""Peak EWMA: power of two choices scored by latency x (in-flight + 1), as Finagle's and
Linkerd's (tower's) ``PeakEwma`` balancers do.

Owns: a latency estimate per eligible backend, fed by the pool's ``on_latency`` hook, and the
sampling. Never does: I/O, read a clock (every time it knows comes with a sample), or count
requests itself (``active`` is kept by the pool and read at pick time).

Theory of operation
-------------------
Each backend has an estimate of its response time, ``cost`` seconds as of time ``stamp``:

* **A sample** ``rtt`` at time ``now`` (the pool calls ``on_latency``: http, the time from
  sending the request to the end of its response; tcp, the connect time) is taken at once when
  it is above ``cost`` (the *peak*: a backend that slows down is avoided from its first slow
  answer). Otherwise it is blended in by the time since the last sample:
  ``cost = cost·w + rtt·(1 - w)`` with ``w = exp(-(now - stamp) / decay)``, an average over
  time, not over request counts, so a busy backend and a quiet one forget at the same pace.
* **Reading** the estimate at time ``t`` gives ``max(floor, cost·exp(-(t - stamp) / decay))``:
  what the average would be if a zero sample arrived now (Finagle's ``get()`` is
  ``observe(0)``), without keeping it. So the estimate of a backend that gets no traffic decays
  towards zero, and the **floor** stops it there: after ``decay·ln(cost / floor)`` seconds
  without a sample (30 s for a 20 ms backend with the defaults), a slow backend ties with the
  fastest ones and is tried again. A recovered backend then answers fast and keeps its
  traffic; one that is still slow gets a new peak and waits another round. Decay by time was
  chosen over a random probe: it costs nothing per pick, a backend is retried sooner the less
  bad it was, and a broken one is not sent a fixed share of requests whatever it does. The
  floor also makes backends faster than it (on loopback, all of them) compare by in-flight
  requests alone, so that clock noise below it does not steer traffic.
* **No sample yet** (a new backend, or one back from drain, down or ejection, whose old
  estimate is dropped): the estimate is ``initial_rtt`` while nothing is in flight to it, and
  ``penalty`` once something is (Finagle's rule): a new backend is tried at once, then gets one
  request at a time until its first answer says how fast it is.

``pick`` samples two distinct eligible backends at random and keeps the one with the smaller
``estimate x (active + 1) / effective_weight`` (cross-multiplied, no division); a tie goes to
the heavier backend, then to the first sampled. O(1). With ``choices`` = d > 2 it samples d
distinct backends (Envoy's ``choice_count``): with two choices, a pool where half the backends
are slow draws two slow ones for a sixth of its picks (2 of 4) and must send one of them the
request; three choices out of four never do. The "time now" used when reading is the
time of the pool's latest sample, so the strategy needs no clock: decay advances with traffic,
and a pool with no traffic picks nothing anyway (the first pick after a silence reads estimates
as of the last answer; the next answer brings the time up to date).

Each worker keeps its own estimates, as each keeps its own in-flight counts.
"""

from __future__ import annotations

import math
import random
from array import array
from collections.abc import Callable, Sequence

from lb.balancing.options import StrategyOptions
from lb.balancing.roster import Roster
from lb.model import Backend

_exp = math.exp

#: An answer below the estimate has at least this weight in it, 1/EVIDENCE, however soon after
#: the previous one it comes: a busy backend forgets a peak within a few EVIDENCE answers.
EVIDENCE = 100
_KEEP = 1.0 - 1.0 / EVIDENCE

#: A pick whose best candidate reads more than this many times the pool's typical latency
#: draws again, twice as many candidates (see "Slow candidates" above).
FAR_WORSE = 4.0


class _Estimate:
    """One backend's latency estimate: ``cost`` seconds (< 0: no sample yet) as of ``stamp``."""

    __slots__ = ("cost", "stamp")

    def __init__(self) -> None:
        self.cost = -1.0
        self.stamp = 0.0


class PeakEwma:
    """Two random candidates; the one with the smaller latency x (in-flight + 1) wins."""

    needs_key = False  # ignores the hash key
    tracks_latency = True  # the pool calls on_latency with each response's latency

    __slots__ = (
        "_backends",
        "_by_backend",
        "_choices",
        "_estimates",
        "_floor",
        "_initial",
        "_inv_decay",
        "_load",
        "_n",
        "_now",
        "_penalty",
        "_perm",
        "_random",
        "_roster",
        "_typical",
        "_weights",
    )

    def __init__(self, options: StrategyOptions, *, rng: Callable[[], float] | None = None) -> None:
        if options.ewma_decay <= 0:
            raise ValueError(f"ewma decay must be > 0 seconds, not {options.ewma_decay!r}")
        for name in ("ewma_floor", "ewma_initial_rtt", "ewma_penalty"):
            value = getattr(options, name)
            if value < 0:
                raise ValueError(f"{name} must be >= 0 seconds, not {value!r}")
        if options.ewma_choices < 2:
            raise ValueError(f"ewma_choices must be >= 2, not {options.ewma_choices!r}")
        self._choices = options.ewma_choices
        self._inv_decay = 1.0 / options.ewma_decay
        self._floor = options.ewma_floor
        self._initial = max(options.ewma_initial_rtt, options.ewma_floor)
        self._penalty = max(options.ewma_penalty, options.ewma_floor)
        self._random = rng if rng is not None else random.random
        self._roster = Roster()
        self._backends: tuple[Backend, ...] = ()
        self._estimates: tuple[_Estimate, ...] = ()
        self._by_backend: dict[Backend, _Estimate] = {}
        self._weights = array("d")
        self._n = 0
        self._perm: list[int] = []  # a permutation of range(n), for choices > 2
        self._now = 0.0
        self._typical = -1.0  # the pool's typical latency (< 0: no sample yet)
        self._load = 1.0  # the pool's typical in-flight count of an answering backend

    def update(self, backends: Sequence[Backend]) -> None:
        roster = self._roster
        if not roster.diff(backends):
            return
        # A backend that stays keeps its estimate (the same object); one that joins, or comes
        # back after leaving, or whose object was replaced (a new address), starts afresh.
        old = self._by_backend
        members = tuple(roster.members.values())
        by_backend = {b: old.get(b) or _Estimate() for b in members}
        self._by_backend = by_backend
        self._backends = members
        self._estimates = tuple(by_backend.values())
        self._weights = array("d", roster.weights.values())
        self._n = len(members)
        self._perm = list(range(self._n))

    def on_latency(self, backend: Backend, rtt: float, now: float) -> None:
        """A response from ``backend`` took ``rtt`` seconds, and ended at ``now`` (the loop's
        clock), while ``backend.active`` requests (this one included) were in flight to it.
        Backends it does not hold (no longer eligible) are ignored."""
        e = self._by_backend.get(backend)
        if e is None:
            self._now = now
            return
        # The pool's figures: every answer, averaged by time (no peaks).
        typical = self._typical
        if typical < 0.0:
            self._typical = rtt
        else:
            w = _exp((self._now - now) * self._inv_decay)
            if w > _KEEP:
                w = _KEEP
            self._typical = typical * w + rtt * (1.0 - w)
            active = backend.active
            self._load = self._load * w + (active if active > 1 else 1) * (1.0 - w)
        self._now = now
        # The backend's estimate.
        cost = e.cost
        if rtt > cost:  # a peak (or the first sample: cost < 0)
            e.cost = rtt
        else:
            w = _exp((e.stamp - now) * self._inv_decay)
            if w > _KEEP:  # each answer counts for at least 1/EVIDENCE
                w = _KEEP
            e.cost = cost * w + rtt * (1.0 - w)
        e.stamp = now

    def _estimate(self, e: _Estimate, active: int) -> float:
        cost = e.cost
        if cost < 0.0:
            return self._initial if not active else self._penalty
        if not active:  # (while a request is out, the last answer stands: one probe at a time)
            elapsed = self._now - e.stamp
            if elapsed > 0.0:
                cost *= _exp(-elapsed * self._inv_decay)
        floor = self._floor
        return cost if cost > floor else floor

    def estimate(self, backend: Backend) -> float | None:
        """``backend``'s latency estimate now, in seconds (None: not eligible here)."""
        e = self._by_backend.get(backend)
        return None if e is None else self._estimate(e, backend.active)

    def load(self) -> float:
        """How many requests an answering backend of the pool usually has in flight (>= 1)."""
        return self._load

    def score(self, backend: Backend) -> float | None:
        """What ``pick`` compares: estimate x (active + load) / effective_weight."""
        e = self._by_backend.get(backend)
        if e is None:
            return None
        active = backend.active
        return self._estimate(e, active) * (active + self._load) / backend.effective_weight

    def typical(self) -> float | None:
        """The pool's typical latency: every answer, averaged by time (None: no answer yet)."""
        return None if self._typical < 0.0 else self._typical

    def _far_worse(self, cost: float) -> bool:
        """Whether the best candidate's estimate ``cost`` is far worse than the pool's typical
        latency (never below the floor): then the pick draws again, wider."""
        typical = self._typical
        floor = self._floor
        return cost > FAR_WORSE * (typical if typical > floor else floor)

    def pick(self, key: bytes | None) -> Backend | None:
        n = self._n
        if n <= 1:
            return self._backends[0] if n else None
        if self._choices > 2:
            best, cost = self._pick_among(n, self._choices)
            if n > self._choices and self._far_worse(cost):
                best, cost = self._pick_among(n, 2 * self._choices)
            return best
        rand = self._random
        i = int(rand() * n)
        j = int(rand() * (n - 1))
        if j >= i:
            j += 1  # two distinct indices, each uniform
        a = self._backends[i]
        b = self._backends[j]
        active_a = a.active
        active_b = b.active
        # _estimate, inlined for both (this is the hot path; a method call costs more than
        # the arithmetic). Stamps are never after _now: it is the latest sample's time.
        floor = self._floor
        e = self._estimates[i]
        cost_a = e.cost
        if cost_a < 0.0:
            cost_a = self._penalty if active_a else self._initial
        else:
            if not active_a:
                cost_a *= _exp((e.stamp - self._now) * self._inv_decay)
            if cost_a < floor:
                cost_a = floor
        e = self._estimates[j]
        cost_b = e.cost
        if cost_b < 0.0:
            cost_b = self._penalty if active_b else self._initial
        else:
            if not active_b:
                cost_b *= _exp((e.stamp - self._now) * self._inv_decay)
            if cost_b < floor:
                cost_b = floor
        wa = self._weights[i]
        wb = self._weights[j]
        load = self._load
        # score_a <= score_b, without dividing (weights are > 0).
        x_a = cost_a * (active_a + load) * wb
        x_b = cost_b * (active_b + load) * wa
        if x_a < x_b or (x_a == x_b and wa >= wb):
            best, cost = a, cost_a
        else:
            best, cost = b, cost_b
        if n > 2 and self._far_worse(cost):
            best, cost = self._pick_among(n, 4)
        return best

    def _pick_among(self, n: int, choices: int) -> tuple[Backend, float]:
        """The lowest score among ``choices`` distinct backends drawn at random (all of them
        when the pool is no bigger), by a partial Fisher-Yates shuffle of a kept permutation,
        and its estimate. O(choices)."""
        perm = self._perm
        rand = self._random
        backends = self._backends
        estimates = self._estimates
        weights = self._weights
        best: Backend | None = None
        best_score = 0.0
        best_weight = 0.0
        best_cost = 0.0
        load = self._load
        for k in range(min(choices, n)):
            r = k + int(rand() * (n - k))
            i = perm[r]
            perm[r] = perm[k]
            perm[k] = i
            b = backends[i]
            active = b.active
            cost = self._estimate(estimates[i], active)
            score = cost * (active + load)
            w = weights[i]
            # score / w < best_score / best_weight, cross-multiplied; a tie: the heavier.
            if (
                best is None
                or score * best_weight < best_score * w
                or (score * best_weight == best_score * w and w > best_weight)
            ):
                best, best_score, best_weight, best_cost = b, score, w, cost
        assert best is not None
        return best, best_cost

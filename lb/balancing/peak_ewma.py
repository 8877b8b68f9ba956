"""Peak EWMA: power of two choices scored by peak-EWMA latency x in-flight requests, as
Finagle's and Linkerd's (tower's) ``PeakEwma`` balancers do, with the in-flight term measured
against the pool's usual load, so that latency which already includes that load does not
count it twice.

Owns: a latency estimate per eligible backend and two pool-wide figures (the typical latency
and the usual in-flight count of an answering backend), fed by the pool's ``on_latency`` hook,
and the sampling. Never does: I/O, read a clock (every time it knows comes with a sample), or
count requests itself (``active`` is kept by the pool and read at pick time and at each
answer).

Compiled by Cython with the class layouts of ``peak_ewma.pxd`` (its work is per request), and
run as it is where nothing was compiled: both decide alike, bit for bit
(``tests/unit/test_peak_ewma_compiled.py``).

Theory of operation
-------------------
Each backend has an estimate of its response time, ``cost`` seconds as of time ``stamp``:

* **A sample** ``rtt`` at time ``now`` (the pool calls ``on_latency``: http, the time from
  sending the request to the end of its response; tcp, the connect time) is taken at once when
  it is above ``cost`` (the *peak*: a backend that slows down is avoided from its first slow
  answer). Otherwise it is blended in: ``cost = cost·w + rtt·(1 - w)`` with
  ``w = exp(-(now - stamp) / decay)``, an average over time, so a quiet backend forgets a peak
  within a few ``decay``; but each answer weighs at least ``1/EVIDENCE`` (1/100), so a busy
  backend forgets one within a few hundred answers (Finagle's weight is by time only: at
  5,000 answers a second each would weigh 2e-5). A peak is often no news about a backend: a
  pause of lb's own loop (or of the machine) shows in every answer in flight, to every
  backend at once, and by time alone it would make the fast backends read as slow as a truly
  slow one for tens of seconds.
* **Reading** the estimate at time ``t``, while nothing is in flight to the backend, gives
  ``max(floor, cost·exp(-(t - stamp) / decay))``: what the average would be if a zero sample
  arrived now (Finagle's ``get()`` is ``observe(0)``), without keeping it. So the estimate of a
  backend that gets no traffic decays, until its score is lower than the other candidate's
  and it is sent a request: a **probe**. The **floor** bounds the decay, so that even against
  idle backends a slow one is tried again after at most ``decay·ln(cost / floor)``; it also
  makes backends faster than it compare by in-flight requests alone (uvloop's clock counts
  milliseconds). While a request is in flight to it, a backend reads ``max(floor, cost)``,
  not decayed: a probe is one request, and the next waits for its answer (Finagle keeps
  decaying, so the picks made while the first probe is out, a few hundred at 10,000
  requests a second, find it as cheap and send it more, up to a dozen at once). A recovered
  backend answers the probe fast; that answer, after a long silence, weighs nearly all of
  the average, and the backend takes its traffic back. One that is still slow gets a new
  peak and waits another round. Decay was chosen over a
  random probe: it costs nothing per pick, a backend is retried sooner the less bad it was,
  and a broken one is not sent a fixed share.
* **No sample yet** (a new backend, or one back from drain, down or ejection, whose old
  estimate is dropped): the estimate is ``initial_rtt`` while nothing is in flight to it, and
  ``penalty`` once something is (Finagle's rule): a new backend is tried at once, then gets one
  request at a time until its first answer says how fast it is.

**The score.** Finagle multiplies the estimate by ``in-flight + 1``. That suits one client of
many, whose own requests are a small part of a backend's load: the latency it measures is the
backend's, and its in-flight count adds its own queue on top. When this pool is a backend's
main load, the latency it measures already includes that queue: with 32 connections over two
fast backends, each has about 16 requests in flight and answers in 2 ms, mostly waiting
behind the other 15 (or in lb's own loop), and ``2 ms x 17 = 34 ms`` loses to an idle backend
that answers in 20 ms (``20 ms x 1``), which then gets the request and keeps the tail at 20 ms.
So ``pick`` compares ``estimate x (active + load) / effective_weight``, where ``load`` is the
pool's usual in-flight count of an answering backend (``active`` at each answer, this one
included, averaged over the pool's answers as above; at least 1): in-flight requests up to
the usual are already in the latency, and ones beyond it add to it. With one client among
many, ``load`` is 1 and this is Finagle's score; in the example, ``2 ms x 32`` beats
``20 ms x 16``, and the idle slow backend gets a request only once a fast one has 144 in
flight. (Dividing each backend's latency by its own in-flight count, a service time, fails
the other way: a backend that adds a fixed delay, like the slow ones above, answers its 10
concurrent requests in 20 ms each, reads 2 ms, and is given more.) A tie goes to the heavier
backend, then to the first sampled.

**Slow candidates.** ``pick`` samples two distinct eligible backends at random (``choices``
= d > 2: d of them, Envoy's ``choice_count``) and keeps the lower score. O(1). But a
candidate whose estimate reads more than ``FAR_WORSE`` (4) times the pool's typical latency
(every answer averaged, no peaks; at least the floor) is no choice: the pick draws another
in its place, until it holds ``choices`` candidates that are not far worse, or twice
``choices`` in all (the whole pool, when it is no bigger), and the lowest score among all it
drew wins. When half the pool is slow, two plain choices draw a slow backend in 2 picks of
3 (of 4), and those picks send the request to the one fast backend drawn, busy or not: the
fast ones are balanced by chance, not by their load, and wrk's req/s on the heterogeneous
pool paid for it (HAProxy's leastconn compares them all). Two slow ones drawn (1 pick in 6)
would even send it to a slow one. With the rule, every such pick compares both fast
backends. A slow backend still gets the request when nothing better was drawn, or when the
others are that busy; a decayed one (due a probe) passes the test and competes as any
other; and a pool where every backend is slow is not far worse than itself. (Before, only a
far-worse *winner* made the pick draw again; a slow loser cost the pick its choice.)

**The draws** come from the strategy's own xorshift32 generator (Marsaglia's 13/17/5
shifts; a 32-bit state, seeded at random per strategy, or by ``seed``), which compiles to a
few C integer operations, where ``random.random`` was a Python call and a float object per
draw; ``rng`` replaces it (tests). Decay factors are written ``_E ** y``, C's ``pow(e, y)``
when compiled, as a call of ``math.exp`` would be a Python call too; plain Python computes
the same ``pow()``, so both decide alike, bit for bit.

The "time now" used when reading is the time of the pool's latest sample, so the strategy
needs no clock: decay advances with traffic, and a pool with no traffic picks nothing anyway
(the first pick after a silence reads estimates as of the last answer; the next answer brings
the time up to date). Each worker keeps its own estimates, as each keeps its own in-flight
counts.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Sequence

from lb.balancing.options import StrategyOptions
from lb.balancing.roster import Roster
from lb.model import Backend

#: exp(y) is written _E ** y: compiled, C's pow(e, y), where a call of math.exp would be a
#: Python call with two float objects; as plain Python, float ** float is the same pow().
_E = math.e

#: An answer below the estimate has at least this weight in it, 1/EVIDENCE, however soon after
#: the previous one it comes: a busy backend forgets a peak within a few EVIDENCE answers.
EVIDENCE = 100
_KEEP = 1.0 - 1.0 / EVIDENCE

#: A pick whose best candidate reads more than this many times the pool's typical latency
#: draws more, up to twice as many candidates (see "Slow candidates" above).
FAR_WORSE = 4.0
_FAR = FAR_WORSE  # (compiled: a C double, as _KEEP is; FAR_WORSE stays a Python name)

#: 2**-32: a 32-bit draw of the strategy's own generator as a float in [0, 1).
_TO_UNIT = 1.0 / 4294967296.0
_MASK32 = 0xFFFFFFFF  # (compiled: a C unsigned int, so that the draws are C arithmetic)


class _Estimate:
    """One backend's latency estimate, ``cost`` seconds (< 0: no sample yet) as of ``stamp``,
    with what a pick reads beside it: the backend and its effective weight (as of the last
    update). One object per eligible backend, so that a pick reads one of them per candidate
    (compiled: C fields of one struct)."""

    __slots__ = ("backend", "cost", "stamp", "weight")

    def __init__(self, backend: Backend) -> None:
        self.backend = backend
        self.cost = -1.0
        self.stamp = 0.0
        self.weight = 1.0


class PeakEwma:
    """Two random candidates; the one with the smaller latency x (in-flight + the pool's
    usual in-flight) wins (a candidate far slower than usual does not count: more are
    drawn)."""

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
        "_keep_dt",
        "_load",
        "_n",
        "_now",
        "_own_rng",
        "_penalty",
        "_perm",
        "_random",
        "_roster",
        "_state",
        "_typical",
    )

    def __init__(
        self,
        options: StrategyOptions,
        *,
        rng: Callable[[], float] | None = None,
        seed: int | None = None,
    ) -> None:
        """``rng``: draws in [0, 1) to use instead of the strategy's own generator (tests);
        ``seed``: the own generator's start (any int; by default a random one)."""
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
        # exp(-dt / decay) > _KEEP exactly when dt < keep_dt: then an answer weighs 1/EVIDENCE.
        self._keep_dt = -math.log(_KEEP) * options.ewma_decay
        self._floor = options.ewma_floor
        self._initial = max(options.ewma_initial_rtt, options.ewma_floor)
        self._penalty = max(options.ewma_penalty, options.ewma_floor)
        # The draws: the strategy's own xorshift32 (state never 0), or the rng given.
        self._own_rng = rng is None
        self._random: Callable[[], float] = rng if rng is not None else random.random  # (unused)
        start = random.getrandbits(32) if seed is None else seed & _MASK32
        self._state = start or 0x9E3779B9
        self._roster = Roster()
        self._backends: tuple[Backend, ...] = ()
        self._estimates: tuple[_Estimate, ...] = ()
        self._by_backend: dict[Backend, _Estimate] = {}
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
        by_backend = {b: old.get(b) or _Estimate(b) for b in members}
        estimates = tuple(by_backend.values())
        # (roster.weights holds the same ids in the same order as roster.members.)
        for e, weight in zip(estimates, roster.weights.values(), strict=True):
            e.weight = weight
        self._by_backend = by_backend
        self._backends = members
        self._estimates = estimates
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
        # An answer's weight: 1 - exp(-dt / decay) for dt since the previous one, but at least
        # 1/EVIDENCE (so no exp() for answers that come closer than keep_dt, the busy case).
        keep_dt = self._keep_dt
        # The pool's figures: every answer, averaged (no peaks).
        typical = self._typical
        if typical < 0.0:
            self._typical = rtt
        else:
            dt = now - self._now
            w = _KEEP if dt < keep_dt else _E ** (-dt * self._inv_decay)
            self._typical = typical * w + rtt * (1.0 - w)
            active = backend.active
            self._load = self._load * w + (active if active > 1 else 1) * (1.0 - w)
        self._now = now
        # The backend's estimate.
        cost = e.cost
        if rtt > cost:  # a peak (or the first sample: cost < 0)
            e.cost = rtt
        else:
            dt = now - e.stamp
            w = _KEEP if dt < keep_dt else _E ** (-dt * self._inv_decay)
            e.cost = cost * w + rtt * (1.0 - w)
        e.stamp = now

    def _estimate(self, e: _Estimate, active: int) -> float:
        cost = e.cost
        if cost < 0.0:
            return self._initial if not active else self._penalty
        if not active:  # (while a request is out, the last answer stands: one probe at a time)
            elapsed = self._now - e.stamp
            if elapsed > 0.0:
                fade = _E ** (-elapsed * self._inv_decay)  # (a C double: pow(), no complex)
                cost *= fade
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
        """The pool's typical latency: every answer, averaged as the estimates are but without
        peaks (None: no answer yet)."""
        return None if self._typical < 0.0 else self._typical

    def _limit(self) -> float:
        """The estimate above which a candidate reads far worse than the pool's typical latency
        (FAR_WORSE times it, never below FAR_WORSE times the floor): such a candidate does not
        count among a pick's choices."""
        typical = self._typical
        floor = self._floor
        return _FAR * (typical if typical > floor else floor)

    def _uniform(self) -> float:
        """A draw in [0, 1): the strategy's own xorshift32 (Marsaglia's 13/17/5; compiled, a
        few C integer operations, no Python call and no float object), or the ``rng`` it was
        given (tests)."""
        if self._own_rng:
            x = self._state
            x ^= (x << 13) & _MASK32
            x ^= x >> 17
            x ^= (x << 5) & _MASK32
            self._state = x
            return x * _TO_UNIT
        return self._random()

    def pick(self, key: bytes | None) -> Backend | None:
        n = self._n
        if n <= 1:
            return self._backends[0] if n else None
        if self._choices > 2:
            return self._pick_among(n, self._choices)
        i = int(self._uniform() * n)
        j = int(self._uniform() * (n - 1))
        if j >= i:
            j += 1  # two distinct indices, each uniform
        ea = self._estimates[i]
        eb = self._estimates[j]
        a = ea.backend
        b = eb.backend
        active_a = a.active
        active_b = b.active
        # _estimate, inlined for both (this is the hot path; a method call costs more than
        # the arithmetic). Stamps are never after _now: it is the latest sample's time, and
        # an estimate stamped now needs no exp() (it would be exp(0) = 1).
        now = self._now
        floor = self._floor
        cost_a = ea.cost
        if cost_a < 0.0:
            cost_a = self._penalty if active_a else self._initial
        else:
            if not active_a and ea.stamp != now:
                fade = _E ** ((ea.stamp - now) * self._inv_decay)
                cost_a *= fade
            if cost_a < floor:
                cost_a = floor
        cost_b = eb.cost
        if cost_b < 0.0:
            cost_b = self._penalty if active_b else self._initial
        else:
            if not active_b and eb.stamp != now:
                fade = _E ** ((eb.stamp - now) * self._inv_decay)
                cost_b *= fade
            if cost_b < floor:
                cost_b = floor
        wa = ea.weight
        wb = eb.weight
        load = self._load
        # score_a <= score_b, without dividing (weights are > 0).
        x_a = cost_a * (active_a + load) * wb
        x_b = cost_b * (active_b + load) * wa
        a_wins = x_a < x_b or (x_a == x_b and wa >= wb)
        if n > 2:
            # _limit, inlined. A candidate that reads far slower than the pool's typical
            # answer is no choice: draw more (see _widen).
            typical = self._typical
            if typical < floor:
                typical = floor
            limit = _FAR * typical
            if cost_a > limit or cost_b > limit:
                normal = (cost_a <= limit) + (cost_b <= limit)
                if a_wins:
                    return self._widen(n, i, j, normal, limit, a, cost_a * (active_a + load), wa)
                return self._widen(n, i, j, normal, limit, b, cost_b * (active_b + load), wb)
        return a if a_wins else b

    def _widen(
        self,
        n: int,
        i: int,
        j: int,
        normal: int,
        limit: float,
        best: Backend,
        best_score: float,
        best_weight: float,
    ) -> Backend:
        """The rest of a two-choice pick whose pair ``i``, ``j`` had a candidate far worse than
        usual (only ``normal`` of them read at most ``limit``): draw more candidates among the
        backends not drawn yet, until two read at most ``limit`` or four were drawn (the
        whole pool, when it is no bigger), and return the lowest score among all of them
        (``best``, ``best_score`` / ``best_weight`` for the pair)."""
        estimates = self._estimates
        load = self._load
        # The drawn indices, ascending; n stands for "none yet" (no index reaches it).
        x0 = i if i < j else j
        x1 = j if i < j else i
        x2 = n
        k = 2
        while normal < 2 and k < 4 and k < n:
            # The r-th index not drawn yet: step over the drawn ones, in ascending order.
            r = int(self._uniform() * (n - k))
            if r >= x0:
                r += 1
            if r >= x1:
                r += 1
            if r >= x2:
                r += 1
            e = estimates[r]
            b = e.backend
            active = b.active
            cost = self._estimate(e, active)
            if cost <= limit:
                normal += 1
            score = cost * (active + load)
            w = e.weight
            # score / w < best_score / best_weight, cross-multiplied; a tie: the heavier.
            if score * best_weight < best_score * w or (
                score * best_weight == best_score * w and w > best_weight
            ):
                best, best_score, best_weight = b, score, w
            k += 1
            if r < x0:
                x0, x1, x2 = r, x0, x1
            elif r < x1:
                x1, x2 = r, x1
            else:
                x2 = r
        return best

    def _pick_among(self, n: int, choices: int) -> Backend:
        """The lowest score among ``choices`` distinct backends drawn at random (all of them
        when the pool is no bigger), by a partial Fisher-Yates shuffle of a kept permutation.
        A candidate far worse than usual does not count among the ``choices``: another is
        drawn, up to twice ``choices`` in all. O(choices)."""
        perm = self._perm
        estimates = self._estimates
        best: Backend | None = None
        best_score = 0.0
        best_weight = 0.0
        load = self._load
        limit = self._limit()
        normal = 0
        width = 2 * choices
        if width > n:
            width = n
        k = 0
        while k < width and normal < choices:
            r = int(self._uniform() * (n - k))
            r += k
            i = perm[r]
            perm[r] = perm[k]
            perm[k] = i
            e = estimates[i]
            b = e.backend
            active = b.active
            cost = self._estimate(e, active)
            if cost <= limit:
                normal += 1
            score = cost * (active + load)
            w = e.weight
            # score / w < best_score / best_weight, cross-multiplied; a tie: the heavier.
            if (
                best is None
                or score * best_weight < best_score * w
                or (score * best_weight == best_score * w and w > best_weight)
            ):
                best, best_score, best_weight = b, score, w
            k += 1
        assert best is not None
        return best

"""When a worker's next task is a gold task: the injection schedule. Pure: no database, no flask.

Each (worker, project) pair has its own stream: task n (counted from 0 while the project has gold for the
worker) is gold when u_n < p_n, where u_n is a uniform number drawn from an HMAC of the pair and n under a
server-side key (reproducible for tests, unpredictable to workers, who never see the key), and p_n is the
configured rate corrected by how far the stream has drifted from it so far.

Why not a plain coin flip at the rate: over 1,000 tasks at 10% its realized rate strays by ±1 point (one standard
deviation), and by more than 1.5 points for one worker in nine. Why not a fixed number of gold per block of tasks:
a worker who counts knows that the rest of a block is safe once its gold has come. The corrected flip converges
(the drift is pulled back at every task) and is never certain: p_n stays between a quarter and three times the
rate, so no position is ever known to be gold or known to be safe.
"""

from __future__ import annotations

import hashlib
import hmac
from decimal import Decimal

# How strongly drift is pulled back: a deficit of one gold task raises the probability by 1/PULL.
PULL = 10
_FLOOR, _CEILING = Decimal("0.25"), Decimal(3)


def schedule_key(secret: str | bytes) -> bytes:
    """The key of the schedule, derived from the app's secret so that the secret itself is never the HMAC key
    of something a worker can observe."""
    raw = secret.encode() if isinstance(secret, str) else secret
    return hmac.new(raw, b"crowdmarket gold schedule", hashlib.sha256).digest()


def draw(key: bytes, project_id: int, worker_id: int, task_no: int) -> float:
    """The uniform number in [0, 1) of one position of one stream."""
    digest = hmac.new(key, f"{project_id}:{worker_id}:{task_no}".encode(), hashlib.sha256).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def probability(rate: Decimal, tasks: int, golds: int) -> float:
    """The chance that the next task is gold, after `tasks` tasks of which `golds` were gold."""
    if rate <= 0:
        return 0.0
    p = rate + (rate * tasks - golds) / PULL
    return float(min(max(p, rate * _FLOOR), min(rate * _CEILING, Decimal(1))))


def is_gold_turn(key: bytes, *, project_id: int, worker_id: int, rate: Decimal, tasks: int, golds: int) -> bool:
    """Whether task number `tasks` of the worker's stream in the project is a gold task."""
    return draw(key, project_id, worker_id, tasks) < probability(rate, tasks, golds)


def gold_tasks_needed(hit_count: int, rate: Decimal) -> int:
    """Gold tasks a worker meets while doing every one of `hit_count` HITs at `rate`: g / (hit_count + g) = rate."""
    if rate <= 0 or hit_count <= 0:
        return 0
    needed = hit_count * rate / (1 - rate)
    return int(needed.to_integral_value(rounding="ROUND_CEILING"))

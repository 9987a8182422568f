"""Versions of the tables each worker keeps in memory (callers, prices, routes): a number
every change bumps, which a worker compares with the one its copy was read at, so a change
reaches every worker of every process without a database read per request.

Two backends behind `bump` and `read`: with REDIS_URL, a Redis counter, without it a row of
`table_versions`; either is bumped once the change has committed, so a worker that sees the
new number then reads the new rows. A bump lost on the way (Redis or the database failing
just after the commit) is covered by the copies' age limits. Workers compare versions for
equality only, so a counter that starts again (a Redis restart) still reads as a change.

A version that cannot be read (Redis or the database unreachable) is None: callers then keep
their copy for its full age (billing.cached.CACHE_SECONDS; KEY_CACHE_SECONDS for key
lookups). The process log says so once per outage, and again when versions can be read again.
"""

import logging
import time

import redis
from django.conf import settings
from django.db import DatabaseError, connection, transaction
from django.db.models import Model
from django.db.models.signals import post_delete, post_save
from redis.exceptions import RedisError

from gateway_project.lib import async_sql, process_state, shared_redis
from gateway_project.lib.errors import for_operators
from gateway_project.models import TableVersion

logger = logging.getLogger(__name__)

_TABLE = TableVersion._meta.db_table
_BUMP_SQL = (
    f"INSERT INTO {_TABLE} (name, version) VALUES (%s, 1) "
    f"ON CONFLICT (name) DO UPDATE SET version = {_TABLE}.version + 1"
)
_READ_SQL = f"SELECT version FROM {_TABLE} WHERE name = %s"
# A version read sits on the path of the request that finds its copy due for a check: a hung
# Redis must cost that request little, and is skipped for a while after it failed.
REDIS_TIMEOUT = shared_redis.TIMEOUT
RETRY_SECONDS = 5.0


def bump(name: str) -> None:
    """Record that table `name` changed. Call it inside the change's transaction: the bump is
    made once the change has committed (none if it rolls back), as its own statement, so a
    long transaction (an import) never holds the version row's lock while it takes others.
    A transaction that changes many rows (a key rotation, a routes file) bumps once."""
    if connection.in_atomic_block and any(
        isinstance(queued, _Bump) and queued.name == name for _, queued, _ in connection.run_on_commit
    ):
        return  # already due when this transaction commits (a rolled-back savepoint's is not)
    transaction.on_commit(_Bump(name, settings.REDIS_URL))


class _Bump:
    def __init__(self, name: str, redis_url: str | None) -> None:
        self.name = name
        self.redis_url = redis_url

    def __call__(self) -> None:
        if self.redis_url:
            _incr(self.redis_url, self.name)
        else:
            _bump_row(self.name)


def _bump_row(name: str) -> None:
    try:
        with connection.cursor() as cursor:
            cursor.execute(_BUMP_SQL, [name])
    except DatabaseError as error:
        # The change itself is committed; workers only learn of it later.
        logger.error(
            "table versions: %s changed, but its version could not be bumped (%s); workers apply the change "
            "only once their copy expires",
            name,
            for_operators(error),
        )


def bump_on_change(model: type[Model], name: str) -> None:
    """Bump `name` whenever a `model` row is saved or deleted through the ORM (admin, shell,
    commands). QuerySet.update() and bulk_create() send no signal: their callers bump."""

    def changed(**kwargs) -> None:
        bump(name)

    post_save.connect(changed, sender=model, weak=False, dispatch_uid=f"table_versions:{name}:save")
    post_delete.connect(changed, sender=model, weak=False, dispatch_uid=f"table_versions:{name}:delete")


async def read(name: str) -> int | None:
    """Table `name`'s version now (0 before its first change); None when it cannot be read."""
    url = settings.REDIS_URL
    if time.monotonic() < _health.skip_until:
        return None
    try:
        if url:
            value = await shared_redis.client(url).get(_key(name))
        else:
            row = await async_sql.fetchone(_READ_SQL, [name])
            value = row[0] if row else 0
    except (RedisError, OSError, DatabaseError) as error:
        _health.failed(error, "Redis" if url else "the database")
        return None
    _health.succeeded()
    return int(value or 0)


def _key(name: str) -> str:
    return f"gateway:table-version:{name}"


def _incr(url: str, name: str) -> None:
    client = redis.Redis.from_url(url, socket_timeout=REDIS_TIMEOUT * 2, socket_connect_timeout=REDIS_TIMEOUT * 2)
    try:
        client.incr(_key(name))
    except (RedisError, OSError) as error:
        # The change itself is committed; workers only learn of it later.
        logger.error(
            "table versions: %s changed, but Redis could not be told (%s: %s); workers apply the change "
            "only once their copy expires",
            name,
            type(error).__name__,
            error,
        )
    finally:
        client.close()


class _Health:
    """Whether reads fail: while they do, they are skipped (a copy's age decides) and
    reported once."""

    def __init__(self) -> None:
        self.skip_until = 0.0
        self.failing = False

    def failed(self, error: Exception, where: str) -> None:
        self.skip_until = time.monotonic() + RETRY_SECONDS
        if not self.failing:
            self.failing = True
            logger.error(
                "table versions: %s is unreachable (%s); until it answers, workers apply changes "
                "(keys and accounts, prices, routes) only once their copy expires, not within a second",
                where,
                for_operators(error),  # a DSN in the error keeps its password out of the log
            )

    def succeeded(self) -> None:
        if self.failing:
            self.failing = False
            logger.warning("table versions: readable again; changes apply within a second again")


_health = _Health()


@process_state.on_reset
def _forget() -> None:
    global _health
    _health = _Health()

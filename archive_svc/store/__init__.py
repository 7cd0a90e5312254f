"""Every SQL statement of the archive, named, in one place (this package), on asyncpg.

Each function runs on the pool (its own autocommit statement) or on a connection. A job's
transitions are single statements built from the state table (``store.transitions``):
compare-and-set, ledger movement and outbox rows together, never read-then-write.
"""

from archive_svc.store.access import *  # noqa: F403
from archive_svc.store.erasure import *  # noqa: F403
from archive_svc.store.imports import *  # noqa: F403
from archive_svc.store.jobs import *  # noqa: F403
from archive_svc.store.outbox import *  # noqa: F403
from archive_svc.store.status import *  # noqa: F403
from archive_svc.store.stuck import *  # noqa: F403
from archive_svc.store.tokens import *  # noqa: F403
from archive_svc.store.transitions import *  # noqa: F403

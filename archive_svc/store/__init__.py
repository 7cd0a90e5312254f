"""Every SQL statement of the archive, named, in one place (this package).

Each function runs on a connection inside the caller's transaction. Transitions are
compare-and-set UPDATEs (`WHERE status = ANY(:sources) AND … RETURNING`), never
read-then-write: zero rows returned means the job was not in a state that allows it.
"""

from archive_svc.store.jobs import *  # noqa: F403
from archive_svc.store.outbox import *  # noqa: F403
from archive_svc.store.stuck import *  # noqa: F403
from archive_svc.store.tokens import *  # noqa: F403

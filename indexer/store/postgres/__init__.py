"""The PostgreSQL + pgvector backend of :class:`indexer.store.IndexStore`.

``schema`` (tables, migrations, engines, URL masking, driver-error translation), ``queries``
(reads), ``tags`` (tag rows, concepts, albums), ``store`` (:class:`PgStore`: writes and vector
search in the database), ``location`` (versions as schemas, writers' advisory locks).
"""

from indexer.store.postgres.location import PgLocation
from indexer.store.postgres.store import PgStore

__all__ = ["PgLocation", "PgStore"]

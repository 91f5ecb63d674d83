"""Database layer: typed SQLAlchemy models, engine/session factory, migrations. Imports no project code."""

from db.engine import Database, make_engine
from db.settings import data_home, database_url, normalise_url

__all__ = ["Database", "data_home", "database_url", "make_engine", "normalise_url"]

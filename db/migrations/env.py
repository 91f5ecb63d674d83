"""Alembic environment: runs migrations against the URL set by db.migrate.alembic_config."""

from alembic import context

from db.engine import make_engine
from db.models import Base


def run_migrations_online() -> None:
    engine = make_engine(context.config.get_main_option("sqlalchemy.url"))
    try:
        with engine.connect() as connection:
            context.configure(
                connection=connection,
                target_metadata=Base.metadata,
                render_as_batch=engine.dialect.name == "sqlite",  # SQLite ALTERs need batch mode
            )
            with context.begin_transaction():
                context.run_migrations()
            connection.commit()
    finally:
        engine.dispose()


run_migrations_online()

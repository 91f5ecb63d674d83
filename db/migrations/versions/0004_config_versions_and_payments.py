"""study config versions; participants' config version; payment reason and bonus

Revision ID: 0004
Revises: 0003

Every study gets version 1 (its config as it is now) and every existing participant is recorded as having
started under it: before this revision a study's config could not be changed after creation.
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "study_config_versions",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("study_id", sa.Integer(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("config", sa.JSON(), nullable=False),
        sa.Column("target_participants", sa.Integer(), nullable=True),
        sa.Column("note", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["study_id"], ["studies.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("study_id", "version", name="uq_config_version_study_version"),
    )
    with op.batch_alter_table("study_config_versions", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_study_config_versions_study_id"), ["study_id"], unique=False)
    with op.batch_alter_table("studies", schema=None) as batch_op:
        batch_op.add_column(sa.Column("config_version", sa.Integer(), server_default="1", nullable=False))
    with op.batch_alter_table("participants", schema=None) as batch_op:
        batch_op.add_column(sa.Column("payment_reason", sa.Text(), nullable=True))
        batch_op.add_column(sa.Column("bonus_cents", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("config_version", sa.Integer(), nullable=True))
    op.execute(
        "INSERT INTO study_config_versions (study_id, version, config, target_participants, note, created_at) "
        "SELECT id, 1, config, target_participants, 'as created', created_at FROM studies"
    )
    op.execute("UPDATE participants SET config_version = 1")


def downgrade() -> None:
    with op.batch_alter_table("participants", schema=None) as batch_op:
        batch_op.drop_column("config_version")
        batch_op.drop_column("bonus_cents")
        batch_op.drop_column("payment_reason")
    with op.batch_alter_table("studies", schema=None) as batch_op:
        batch_op.drop_column("config_version")
    with op.batch_alter_table("study_config_versions", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_study_config_versions_study_id"))
    op.drop_table("study_config_versions")

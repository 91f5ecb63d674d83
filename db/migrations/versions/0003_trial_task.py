"""trials.task: odd-one-out or anchor (head, close, far) judgments

Revision ID: 0003
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("trials", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column(
                "task",
                sa.Enum("odd_one_out", "anchor", name="judgmenttask", native_enum=False, length=32),
                server_default="odd_one_out",
                nullable=False,
            )
        )


def downgrade() -> None:
    with op.batch_alter_table("trials", schema=None) as batch_op:
        batch_op.drop_column("task")

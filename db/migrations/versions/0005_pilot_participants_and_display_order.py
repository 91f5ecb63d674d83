"""pilot participants; a trial's fixed display order

Revision ID: 0005
Revises: 0004

`participants.is_pilot` marks a researcher's preview run through the real participant flow (kept out of
targets, list counts, QC and data); every existing participant is a real one. `trials.display_order` holds a
fixed left/middle/right order for designs imported with their file's image order; existing trials keep the
random per-participant order (NULL).
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("participants", schema=None) as batch_op:
        batch_op.add_column(sa.Column("is_pilot", sa.Boolean(), server_default=sa.false(), nullable=False))
    with op.batch_alter_table("trials", schema=None) as batch_op:
        batch_op.add_column(sa.Column("display_order", sa.String(length=3), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("trials", schema=None) as batch_op:
        batch_op.drop_column("display_order")
    with op.batch_alter_table("participants", schema=None) as batch_op:
        batch_op.drop_column("is_pilot")

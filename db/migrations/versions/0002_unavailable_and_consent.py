"""responses.unavailable; consent recorded for imported and simulated participants

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-30 10:00:00.000000

Analyses read only participants whose consent is recorded as given. Imported participants (consent was
collected by the source study) and simulated ones were stored with no consent value before; they are
marked as consenting here so they stay in analyses.
"""
from alembic import op
import sqlalchemy as sa


revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('responses', schema=None) as batch_op:
        batch_op.add_column(sa.Column('unavailable', sa.Boolean(), server_default=sa.false(), nullable=False))
    op.execute(
        "UPDATE participants SET consent = true "
        "WHERE consent IS NULL AND source IN ('imported', 'simulated')"
    )


def downgrade() -> None:
    with op.batch_alter_table('responses', schema=None) as batch_op:
        batch_op.drop_column('unavailable')

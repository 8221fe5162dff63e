"""the model a job's student starts from (student.init)

Revision ID: 0003
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"


def upgrade() -> None:
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.add_column(sa.Column("init_file_id", sa.String(length=40), nullable=True))
        batch_op.create_index("ix_jobs_init_file_id", ["init_file_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.drop_index("ix_jobs_init_file_id")
        batch_op.drop_column("init_file_id")

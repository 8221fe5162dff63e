"""uploads.multipart_id: an upload in parts on S3 is an S3 multipart upload

Revision ID: 0008
Revises: 0007
"""

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"


def upgrade() -> None:
    op.add_column("uploads", sa.Column("multipart_id", sa.String(length=1024), nullable=True))


def downgrade() -> None:
    op.drop_column("uploads", "multipart_id")

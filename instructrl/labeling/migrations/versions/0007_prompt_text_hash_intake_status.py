"""prompts get an indexed hash of their text; intakes a status (issue 23)

Ranking and A/B uploads find their prompts by `text_hash` (they scanned `prompts.text` once per item, holding
SQLite's write lock: 38 s for 2,000 items against 119,445 prompts). Intakes say whether their import finished;
the ones already stored did (a failed import removed its record).

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-01 06:00:00.000000
"""

import hashlib
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

prompts = sa.table(
    "prompts", sa.column("id", sa.Integer), sa.column("text", sa.Text), sa.column("text_hash", sa.String)
)
BATCH = 5000


def upgrade() -> None:
    with op.batch_alter_table("intakes", schema=None) as batch_op:
        batch_op.add_column(sa.Column("status", sa.String(16), nullable=False, server_default="complete"))
    with op.batch_alter_table("prompts", schema=None) as batch_op:
        batch_op.add_column(sa.Column("text_hash", sa.String(64), nullable=True))
    # The same hash as models.text_hash (copied: a migration must not change when the app does).
    conn = op.get_bind()
    last = 0
    while rows := conn.execute(
        sa.select(prompts.c.id, prompts.c.text).where(prompts.c.id > last).order_by(prompts.c.id).limit(BATCH)
    ).all():
        conn.execute(
            prompts.update().where(prompts.c.id == sa.bindparam("pid")).values(text_hash=sa.bindparam("h")),
            [
                {"pid": pid, "h": hashlib.sha256(t.encode("utf-8", "surrogatepass")).hexdigest()}
                for pid, t in rows
            ],
        )
        last = rows[-1][0]
    # Nullable: making it NOT NULL rebuilds the table on SQLite, which the tasks' foreign keys refuse.
    op.create_index("ix_prompts_text_hash", "prompts", ["text_hash"])


def downgrade() -> None:
    op.drop_index("ix_prompts_text_hash", "prompts")
    with op.batch_alter_table("prompts", schema=None) as batch_op:
        batch_op.drop_column("text_hash")
    with op.batch_alter_table("intakes", schema=None) as batch_op:
        batch_op.drop_column("status")

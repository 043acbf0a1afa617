"""labeler groups are a fixed set: 'default' or 'heldout' (issue 13)

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-30 02:20:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from instructrl.errors import UserError

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # A user in another group (a typo such as 'heldOut') may have had held-out work exported for training:
    # a person must decide which group they meant, so the upgrade stops and says which users.
    others = op.get_bind().execute(
        sa.text("SELECT name, labeler_group FROM users WHERE labeler_group NOT IN ('default', 'heldout')")
    )
    found = [f"{name} ({group})" for name, group in others]
    if found:
        raise UserError(
            f"users in a labeler group other than 'default' or 'heldout': {', '.join(found)}; set each one's "
            f"labeler_group to 'default' or 'heldout' in the users table, then start again"
        )
    with op.batch_alter_table("users", schema=None) as batch_op:
        batch_op.create_check_constraint("ck_users_labeler_group", "labeler_group IN ('default', 'heldout')")


def downgrade() -> None:
    with op.batch_alter_table("users", schema=None) as batch_op:
        batch_op.drop_constraint("ck_users_labeler_group", type_="check")

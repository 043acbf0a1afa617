"""labeling rounds: ranking tasks and generation jobs name their round; candidates their model (issue 12)

Existing ranking tasks become round 1 and their responses' model is the generation job's model, else the
task's (an upload's `model`), where either is known. Existing jobs become round 1 with one checkpoint.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-30 05:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

tasks = sa.table(
    "tasks",
    sa.column("id", sa.Integer),
    sa.column("kind", sa.String),
    sa.column("responses", sa.JSON),
    sa.column("model", sa.String),
    sa.column("source", sa.String),
    sa.column("response_models", sa.JSON),
    sa.column("round", sa.Integer),
)
jobs = sa.table(
    "generation_jobs",
    sa.column("id", sa.Integer),
    sa.column("checkpoint", sa.Text),
    sa.column("model_name", sa.String),
    sa.column("k", sa.Integer),
    sa.column("checkpoints", sa.JSON),
)


def upgrade() -> None:
    with op.batch_alter_table("tasks", schema=None) as batch_op:
        batch_op.add_column(sa.Column("response_models", sa.JSON(), nullable=True))
        batch_op.add_column(sa.Column("round", sa.Integer(), nullable=True))
    with op.batch_alter_table("generation_jobs", schema=None) as batch_op:
        batch_op.add_column(sa.Column("checkpoints", sa.JSON(), nullable=True))
        batch_op.add_column(sa.Column("round", sa.Integer(), nullable=False, server_default="1"))

    conn = op.get_bind()
    job_models: dict[str, str] = {}
    for job_id, checkpoint, model_name, k in conn.execute(
        sa.select(jobs.c.id, jobs.c.checkpoint, jobs.c.model_name, jobs.c.k)
    ):
        job_models[f"generation:{job_id}"] = model_name
        conn.execute(
            jobs.update()
            .where(jobs.c.id == job_id)
            .values(checkpoints=[{"checkpoint": checkpoint, "model_name": model_name, "k": k}])
        )
    conn.execute(tasks.update().where(tasks.c.kind == "ranking").values(round=1))
    rows = conn.execute(
        sa.select(tasks.c.id, tasks.c.responses, tasks.c.model, tasks.c.source).where(
            tasks.c.kind == "ranking"
        )
    )
    for task_id, responses, model, source in rows.all():
        name = job_models.get(source, model)
        if name is not None and responses:
            conn.execute(
                tasks.update().where(tasks.c.id == task_id).values(response_models=[name] * len(responses))
            )

    with op.batch_alter_table("generation_jobs", schema=None) as batch_op:
        batch_op.alter_column("checkpoints", existing_type=sa.JSON(), nullable=False)


def downgrade() -> None:
    with op.batch_alter_table("generation_jobs", schema=None) as batch_op:
        batch_op.drop_column("round")
        batch_op.drop_column("checkpoints")
    with op.batch_alter_table("tasks", schema=None) as batch_op:
        batch_op.drop_column("round")
        batch_op.drop_column("response_models")

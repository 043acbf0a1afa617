"""`instructrl label {serve,add-user,disable-user,enable-user,end-sessions,reset-password,import-prompts,export}`:
the labeling app from the command line.

fastapi, sqlalchemy and friends are imported inside the run functions, so `instructrl --help` stays fast.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from instructrl.errors import UserError


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "label", help="the human-feedback labeling web app (serve, users, prompt intake, export)"
    )
    p.set_defaults(func=lambda _args: p.print_help() or 2)
    label = p.add_subparsers(dest="label_command", metavar="SUBCOMMAND")
    db_help = (
        "database URL (default: SQLite file ./instructrl-data/labels.db; or postgresql://user:pw@host/db)"
    )

    s = label.add_parser("serve", help="start the web app")
    s.add_argument("--db", help=db_help)
    s.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    s.add_argument("--port", type=_port, default=8000, help="port (default 8000)")
    s.set_defaults(func=run_serve)

    u = label.add_parser("add-user", help="create an admin or labeler account")
    u.add_argument("name", help="user name (letters, digits, _ . @ -)")
    u.add_argument("--role", required=True, choices=["admin", "labeler"])
    u.add_argument(
        "--group",
        default="default",
        help="labeler group: 'default', or 'heldout' (their work is kept for evaluation only)",
    )
    u.add_argument("--password-file", help="read the password from this file (first line); default: prompt")
    u.add_argument("--db", help=db_help)
    u.set_defaults(func=run_add_user)

    for command, help_text, func in (
        (
            "disable-user",
            "disable an account: its sessions end at once, its pending tasks go back",
            run_disable,
        ),
        ("enable-user", "enable a disabled account again", run_enable),
        ("end-sessions", "log a user out everywhere", run_end_sessions),
        ("reset-password", "set a new password for a user (ends all their sessions)", run_reset_password),
    ):
        a = label.add_parser(command, help=help_text)
        a.add_argument("name", help="user name (case does not matter)")
        if command == "reset-password":
            a.add_argument(
                "--password-file", help="read the password from this file (first line); default: prompt"
            )
        a.add_argument("--db", help=db_help)
        a.set_defaults(func=func)

    i = label.add_parser("import-prompts", help="run the prompt intake on a CSV or JSONL file")
    i.add_argument("file", help='CSV (header with prompt,user_id) or JSONL ({"prompt", "user_id"})')
    i.add_argument("--db", help=db_help)
    i.add_argument("--json", action="store_true", help="print the intake report as JSON")
    i.set_defaults(func=run_import_prompts)

    e = label.add_parser("export", help="write the labels as the trainers' JSONL files, per split")
    e.add_argument("--out", required=True, help="output directory")
    e.add_argument(
        "--round",
        type=_round,
        help="export this labeling round's comparisons only (default: everything, all rounds)",
    )
    e.add_argument("--db", help=db_help)
    e.set_defaults(func=run_export)


def _port(text: str) -> int:
    """A TCP port; anything else is argparse's usage error (exit 2), not a traceback from bind()."""
    if not (text.isascii() and text.isdigit() and 1 <= int(text) <= 65535):
        raise argparse.ArgumentTypeError(f"{text!r} is not a port: give a number from 1 to 65535")
    return int(text)


def _round(text: str) -> int:
    if not (text.isascii() and text.isdigit() and int(text) >= 1):
        raise argparse.ArgumentTypeError(f"{text!r} is not a round: give a whole number from 1")
    return int(text)


def _settings(args: argparse.Namespace) -> Any:
    from pydantic import ValidationError

    from instructrl.labeling.core.config import Settings

    try:
        return Settings(database_url=args.db) if args.db else Settings()
    except ValidationError as e:
        raise UserError(f"invalid INSTRUCTRL_LABEL_* setting: {e}") from None


def run_serve(args: argparse.Namespace) -> int:
    import uvicorn

    from instructrl.labeling.main import create_app

    settings = _settings(args)
    app = create_app(settings)
    print(
        f"instructrl label: serving on http://{args.host}:{args.port} (database {_shown(settings.database_url)})"
    )
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")
    return 0


def _shown(url: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)


def _read_password(path: str | None) -> str:
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise UserError(f"{p}: password file not found")
        lines = p.read_text(encoding="utf-8").splitlines()
        return lines[0] if lines else ""
    if not sys.stdin.isatty():
        raise UserError("no terminal to ask for the password on; pass --password-file FILE")
    import getpass

    first = getpass.getpass("Password: ")
    if getpass.getpass("Password again: ") != first:
        raise UserError("the two passwords differ")
    return first


def run_add_user(args: argparse.Namespace) -> int:
    from pydantic import ValidationError

    from instructrl.labeling.core.db import Database
    from instructrl.labeling.models import GROUPS
    from instructrl.labeling.schemas import UserCreate
    from instructrl.labeling.services.users import create_user

    if args.group not in GROUPS:
        raise UserError(f"--group '{args.group}': choose {' or '.join(repr(g) for g in GROUPS)}")
    settings = _settings(args)
    password = _read_password(args.password_file)
    settings.password.check(password, name=args.name)  # before the database is opened or created
    try:
        user_in = UserCreate(name=args.name, password=password, role=args.role, group=args.group)
    except ValidationError as e:
        problems = "; ".join(f"{'.'.join(map(str, x['loc']))}: {x['msg']}" for x in e.errors())
        raise UserError(problems) from None
    db = Database(settings.database_url)
    try:
        with db.session() as session:
            user = create_user(session=session, user_in=user_in, policy=settings.password)
            print(
                f"created {user.role} '{user.name}'"
                + (f" (group {user.group})" if user.role == "labeler" else "")
            )
    finally:
        db.dispose()
    return 0


def _on_user(args: argparse.Namespace, action: Any) -> int:
    """Run `action(session, settings, user)` on the user named args.name; print what it returns."""
    from instructrl.labeling.core.db import Database
    from instructrl.labeling.services.users import find_user

    settings = _settings(args)
    db = Database(settings.database_url)
    try:
        with db.session() as session:
            print(action(session, settings, find_user(session=session, name=args.name)))
    finally:
        db.dispose()
    return 0


def run_disable(args: argparse.Namespace) -> int:
    from instructrl.labeling.services.users import set_disabled

    def disable(session: Any, _settings: Any, user: Any) -> str:
        set_disabled(session=session, user_id=user.id, disabled=True)
        return f"disabled '{user.name}': logged out everywhere, pending tasks given back"

    return _on_user(args, disable)


def run_enable(args: argparse.Namespace) -> int:
    from instructrl.labeling.services.users import set_disabled

    def enable(session: Any, _settings: Any, user: Any) -> str:
        set_disabled(session=session, user_id=user.id, disabled=False)
        return f"enabled '{user.name}'"

    return _on_user(args, enable)


def run_end_sessions(args: argparse.Namespace) -> int:
    from instructrl.labeling.services.users import end_sessions

    def end(session: Any, _settings: Any, user: Any) -> str:
        return f"ended {end_sessions(session=session, user_id=user.id)} session(s) of '{user.name}'"

    return _on_user(args, end)


def run_reset_password(args: argparse.Namespace) -> int:
    from instructrl.labeling.services.users import reset_password

    password = _read_password(args.password_file)
    _settings(args).password.check(password, name=args.name)  # before the database is opened

    def reset(session: Any, settings: Any, user: Any) -> str:
        n = reset_password(session=session, user_id=user.id, password=password, policy=settings.password)
        return f"set a new password for '{user.name}' and ended {n} session(s)"

    return _on_user(args, reset)


def run_import_prompts(args: argparse.Namespace) -> int:
    from instructrl.labeling.core.db import Database
    from instructrl.labeling.schemas import IntakePublic
    from instructrl.labeling.services.prompts import import_prompts, parse_prompt_file

    settings = _settings(args)
    path = Path(args.file)
    if not path.is_file():
        raise UserError(f"{path}: no such file")
    records = parse_prompt_file(data=path.read_bytes(), filename=str(path), limit=settings.max_upload_bytes)
    db = Database(settings.database_url)
    try:
        with db.session() as session:
            intake = IntakePublic.model_validate(
                import_prompts(session=session, records=records, settings=settings.intake, filename=path.name)
            )
    finally:
        db.dispose()
    r = intake.report
    if args.json:
        print(json.dumps(r.model_dump(mode="json"), indent=2))
    else:
        print(
            f"{path}: received {r.received}, kept {r.kept}; dropped {r.dropped_duplicate} duplicates, "
            f"{r.dropped_pii} with personal information, {r.dropped_user_cap} over the per-user cap; "
            f"flagged {r.flagged_pii}"
        )
        for name, c in r.splits.items():
            print(f"  {name}: {c.prompts} prompts from {c.users} users")
    return 0


def run_export(args: argparse.Namespace) -> int:
    from instructrl.labeling.core.db import Database
    from instructrl.labeling.services.export import export

    db = Database(_settings(args).database_url)
    try:
        with db.session() as session:
            summary = export(session=session, out_dir=Path(args.out), round=args.round)
    finally:
        db.dispose()
    for path, n in summary.files.items():
        print(f"{Path(args.out) / path}: {n} records")
    if summary.comparisons_per_round:
        rounds = ", ".join(f"round {r}: {n}" for r, n in summary.comparisons_per_round.items())
        print(f"comparisons per round: {rounds}")
    if summary.excluded_heldout:
        print(
            f"({summary.excluded_heldout} held-out labelers' records are under heldout/, not in the training files)"
        )
    return 0

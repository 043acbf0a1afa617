"""The one exception type for mistakes a user can fix."""


class UserError(Exception):
    """A bad file, flag or config value. The CLI prints the message without a traceback and exits with 2.

    The message says where the problem is (file, line, field) and how to fix it.
    """


def where(path: object, line: int | None = None, field: str | None = None) -> str:
    """`file:line: field 'x'` prefix for error messages."""
    out = str(path)
    if line is not None:
        out += f":{line}"
    if field is not None:
        out += f": field '{field}'"
    return out

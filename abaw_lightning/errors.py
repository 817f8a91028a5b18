"""The one exception type for mistakes a user can fix: shown as a message, never a traceback."""

from __future__ import annotations

WORKER_TRACEBACK = "\nOriginal Traceback (most recent call last):\n"
"""What torch puts between "Caught X in DataLoader worker process N." and the worker's traceback
when it re-raises a worker's exception in the main process as ``X(long_text)``."""


def original_message(text: str, error_type: type[BaseException]) -> str:
    """The message a worker raised, out of torch's re-raise text (other text is returned as is).

    The re-raise text ends with the worker's formatted exception, `<module>.<type>: <message>`.
    """
    if not text.startswith(f"Caught {error_type.__name__} ") or WORKER_TRACEBACK not in text:
        return text
    marker = f"\n{error_type.__module__}.{error_type.__qualname__}: "
    if marker not in text:
        return text
    return text.rsplit(marker, 1)[1].rstrip("\n")


class UserError(Exception):
    """A problem with the user's data, paths or configuration; the message says what to do.

    Raised in a DataLoader worker, it reaches the main process with the worker's message only
    (torch re-raises it as ``UserError(<25-line traceback text>)``).
    """

    def __init__(self, message: str = "") -> None:
        super().__init__(original_message(str(message), type(self)))


def print_user_error(error: UserError) -> None:
    """Print the one ``error:`` line on stderr, unwrapped, with its brackets printed as they are."""
    from rich.console import Console
    from rich.markup import escape

    console = Console(stderr=True, soft_wrap=True)
    console.print(f"[bold red]error:[/] {escape(str(error))}", highlight=False)

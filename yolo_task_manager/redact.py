"""Credentials never shown: masked in URLs, in any text, and in every log record of the processes we own."""

from __future__ import annotations

import logging
import re
import sys
import threading
import traceback
from collections.abc import Callable
from types import TracebackType
from typing import Any

__all__ = ["MASK", "RedactingFilter", "install_redaction", "mask_url", "redact", "shown"]

MASK = "***"

# A URL runs to the first blank or quote. Its password may hold '@', '/', ':' or '#' when the user did not
# percent-encode them, so the user info ends at the URL's *last* '@': masking too much beats showing a piece.
_URL = re.compile(r"\b[A-Za-z][A-Za-z0-9+.\-]*://[^\s'\"<>`]*")
_PASSWORD_PARAM = re.compile(r"(\bpassword\s*=\s*)([^\s&;'\"]+)", re.IGNORECASE)


def _mask_one(url: str) -> str:
    scheme, _, rest = url.partition("://")
    userinfo, at, after = rest.rpartition("@")
    if at and ":" in userinfo:
        user = userinfo.split(":", 1)[0]
        rest = f"{user}:{MASK}@{after}"
    return f"{scheme}://{_PASSWORD_PARAM.sub(_mask_param, rest)}"


def _mask_param(match: re.Match[str]) -> str:
    return match.group(1) + MASK


def mask_url(url: object) -> str:
    """``url`` with its password replaced by ``***``: ``redis://:***@h/0``, ``postgresql+psycopg://u:***@h/db``.

    Handles rediss, ``unix://:pw@/path.sock``, and ``?password=`` parameters; a URL without a password comes
    back unchanged. Text that is not a URL but could hide a password (``host:secret``) is masked whole.
    """
    text = str(url)
    if _URL.fullmatch(text):
        return _mask_one(text)
    if ":" in text or "@" in text:
        return MASK
    return text


def redact(text: str) -> str:
    """``text`` with the password of every URL in it, and every ``password=...``, masked."""
    if "://" in text:
        text = _URL.sub(lambda m: _mask_one(m.group(0)), text)
    if "password" in text.lower():
        text = _PASSWORD_PARAM.sub(_mask_param, text)
    return text


def shown(value: object, limit: int = 80) -> str:
    """``value`` as an error message may show it: its repr, cut to ``limit`` characters, credentials masked
    (an integer of a thousand digits is described, not printed: ``repr`` would refuse past 4300)."""
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) >= 10**30:
        return f"<an integer of {value.bit_length()} bits>"
    text = redact(repr(value))
    return text if len(text) <= limit else f"{text[: limit - 3]}..."


class RedactingFilter(logging.Filter):
    """Masks credentials in a record's message (after formatting its args), exception text and stack."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # noqa: BLE001 - a malformed record is logging's to report, not ours
            return True
        masked = redact(message)
        if masked != message:
            record.msg, record.args = masked, ()
        if record.exc_info and not record.exc_text:
            text = "".join(traceback.format_exception(*record.exc_info)).rstrip("\n")
            if redact(text) != text:
                record.exc_text = redact(text)  # formatters keep an exc_text that is already there
        elif record.exc_text:
            record.exc_text = redact(record.exc_text)
        if record.stack_info:
            record.stack_info = redact(record.stack_info)
        return True


_installed = threading.Lock()


def install_redaction() -> None:
    """Run ``RedactingFilter`` on every record this process creates, and mask uncaught tracebacks.

    For the processes we own (the CLI, workers): a filter on a logger misses records propagated from its
    children, and Celery adds its handlers after we start, so the filter runs where records are made.
    Idempotent. A library must not call this in its host's process.
    """
    with _installed:
        factory = logging.getLogRecordFactory()
        if getattr(factory, "ytm_redacting", False):
            return
        redacting = RedactingFilter()

        def make_record(*args: Any, **kwargs: Any) -> logging.LogRecord:
            record = factory(*args, **kwargs)
            redacting.filter(record)
            return record

        make_record.ytm_redacting = True  # type: ignore[attr-defined]
        logging.setLogRecordFactory(make_record)
        sys.excepthook = _masked_hook(sys.excepthook)
        threading.excepthook = _masked_thread_hook(threading.excepthook)


def _print_masked(exc_type: type[BaseException], exc: BaseException, tb: TracebackType | None) -> None:
    sys.stderr.write(redact("".join(traceback.format_exception(exc_type, exc, tb))))


def _masked_hook(
    original: Callable[[type[BaseException], BaseException, TracebackType | None], Any],
) -> Callable[[type[BaseException], BaseException, TracebackType | None], Any]:
    def hook(exc_type: type[BaseException], exc: BaseException, tb: TracebackType | None) -> None:
        if issubclass(exc_type, KeyboardInterrupt):
            original(exc_type, exc, tb)
        else:
            _print_masked(exc_type, exc, tb)

    return hook


def _masked_thread_hook(original: Callable[[Any], Any]) -> Callable[[Any], Any]:
    def hook(args: Any) -> None:
        if args.exc_type is SystemExit or args.exc_value is None:
            original(args)
            return
        sys.stderr.write(f"Exception in thread {getattr(args.thread, 'name', '?')}:\n")
        _print_masked(args.exc_type, args.exc_value, args.exc_traceback)

    return hook

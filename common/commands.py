"""What every management command shares: argument types that check a value where argparse reads
it, and a base class that ends a bad argument like any CommandError (one line, exit status 1)."""

from __future__ import annotations

import argparse
import sys
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError
from rest_framework import serializers


class Command(BaseCommand):
    """A management command whose bad arguments are a CommandError: `manage.py` prints one line,
    `CommandError: argument --days: Ensure this value is greater than or equal to 1. (got '0')`,
    and exits with status 1 (argparse alone prints its usage and exits with 2); under
    call_command the CommandError is raised, as Django does."""

    def create_parser(self, prog_name: str, subcommand: str, **kwargs: Any):
        parser = super().create_parser(prog_name, subcommand, **kwargs)
        # Django's CommandParser raises CommandError instead of exiting when not "called from
        # the command line"; run_from_argv below prints it the way execute()'s are printed.
        parser.called_from_command_line = False
        return parser

    def run_from_argv(self, argv: list[str]) -> None:
        try:
            super().run_from_argv(argv)
        except CommandError as exc:  # the parser's: those of execute() were handled inside
            if "--traceback" in argv:
                raise
            self.stderr.write(f"CommandError: {str(exc).removeprefix('Error: ')}")
            sys.exit(exc.returncode)


def field_type(field: serializers.Field) -> Callable[[str], Any]:
    """An argparse `type=` that parses and validates with a DRF serializer field, so that a
    command accepts exactly what the API accepts for the same value (one rule, one home)."""

    def parse(text: str) -> Any:
        try:
            value = field.run_validation(text)
        except serializers.ValidationError as exc:
            detail = exc.detail if isinstance(exc.detail, list) else [exc.detail]
            raise argparse.ArgumentTypeError(
                f"{' '.join(str(message) for message in detail)} (got {text!r})"
            ) from None
        if value is None:  # a blank value of a field that allows null
            raise argparse.ArgumentTypeError("a value is required (got '')")
        return value

    parse.__name__ = type(field).__name__
    return parse


def uuid_type(text: str) -> uuid.UUID:
    """A UUID such as a memory's id."""
    return field_type(serializers.UUIDField())(text)


def positive_int(text: str) -> int:
    """A whole number, 1 or more (a count or a limit)."""
    return field_type(serializers.IntegerField(min_value=1))(text)


def existing_file(text: str) -> Path:
    """A path to an existing file."""
    path = Path(text)
    if not path.is_file():
        raise argparse.ArgumentTypeError(f"no such file: {text!r}")
    return path

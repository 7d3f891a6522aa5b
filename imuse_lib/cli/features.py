"""Placeholder: this command group is being written (see the issue that owns it)."""


def register(sub) -> None:
    pass

"""`al rounds`: see al_core.audit_cli and al_core.audit."""

from al_core.audit_cli import rounds_main


def main(argv: list[str]) -> int:
    return rounds_main(argv)

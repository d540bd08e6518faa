"""`al export`: see al_core.audit_cli and al_core.audit."""

from al_core.audit_cli import export_main


def main(argv: list[str]) -> int:
    return export_main(argv)

"""`al lineage`: see al_core.audit_cli and al_core.audit."""

from al_core.audit_cli import lineage_main


def main(argv: list[str]) -> int:
    return lineage_main(argv)

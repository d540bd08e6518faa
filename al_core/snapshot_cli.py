"""`al snapshot`: see al_core.audit_cli and al_core.audit."""

from al_core.audit_cli import snapshot_main


def main(argv: list[str]) -> int:
    return snapshot_main(argv)

"""Benchmarks run by `al bench <name> ...`.

Each module `al_core.bench.<name>` exposes `main(argv: list[str]) -> int` with
its own argparse parser, prints its JSON result on stdout and writes it to
`--json OUT` when given. Results and the commands that produced them are
recorded in docs/benchmarks.md.
"""

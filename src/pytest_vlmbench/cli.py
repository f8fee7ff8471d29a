"""The `vlmbench` command: look at catalogs, devices and results files.

    vlmbench models [--catalog FILE]     the catalog's models, precisions and sources
    vlmbench devices                      device profiles, and what this machine is
    vlmbench validate FILE...             check results files (and their records) against the schema
    vlmbench show FILE                    the summary table of a results file

Exit status: 0 ok, 1 a file failed validation, 2 usage error (bad arguments, unreadable file).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from pytest_vlmbench import devices, table
from pytest_vlmbench.catalog import CatalogError, load_catalog
from pytest_vlmbench.records import read_records
from pytest_vlmbench.results import ResultsError, load, records_path, validate_record

EXIT_OK, EXIT_INVALID, EXIT_USAGE = 0, 1, 2


def _models(args: argparse.Namespace) -> int:
    try:
        catalog = load_catalog(Path(args.catalog))
    except CatalogError as exc:
        print(f"vlmbench: {exc}", file=sys.stderr)
        return EXIT_USAGE
    for spec in catalog.models.values():
        flag = "default" if spec.default else "opt-in"
        print(f"{spec.id}  [{spec.backend}, {spec.modality}, {flag}]  {spec.description}")
        for precision, source in spec.precisions.items():
            print(f"    {precision}: {source}")
        if spec.projector:
            print(f"    projector: {spec.projector}")
    return EXIT_OK


def _devices(_args: argparse.Namespace) -> int:
    detection = devices.detect()
    for p in devices.PROFILES.values():
        mark = "*" if p.name == detection.profile else " "
        bw = f"{p.bandwidth_gbs:g} GB/s" if p.bandwidth_gbs else "bandwidth n/a"
        mem = f"{p.memory_gb:g} GB" if p.memory_gb else "memory: host"
        print(f"{mark} {p.name:10} {p.description}; {mem}, {bw}, meter {p.power_meter}")
        print(f"    precisions: {', '.join(p.precisions)}")
    print(f"this machine: {detection.profile} ({detection.evidence})")
    return EXIT_OK


def _validate(args: argparse.Namespace) -> int:
    status = EXIT_OK
    for name in args.files:
        path = Path(name)
        try:
            doc = load(path)
            rpath = records_path(path, doc)
            records = read_records(rpath) if rpath.exists() else []
            for i, record in enumerate(records, 1):
                validate_record(record, f"{rpath}:{i}")
        except (ResultsError, ValueError) as exc:
            print(f"invalid: {exc}", file=sys.stderr)
            status = EXIT_INVALID
            continue
        note = f"{len(records)} records" if rpath.exists() else f"records file {rpath} missing"
        print(f"ok: {path} ({len(doc['benchmarks'])} benchmarks, {note})")
    return status


def _show(args: argparse.Namespace) -> int:
    try:
        doc = load(Path(args.file))
    except ResultsError as exc:
        print(f"vlmbench: {exc}", file=sys.stderr)
        return EXIT_USAGE
    dev = doc["device"]
    print(f"run {doc['run_id']} ({doc['status']}) on {dev['name']}: {doc['environment']['cpu']}")
    for line in table.render(doc["benchmarks"]):
        print(line)
    return EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vlmbench", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("models", help="list the models of a catalog")
    p.add_argument("--catalog", default="benchmarks/models.toml")
    p.set_defaults(func=_models)
    p = sub.add_parser("devices", help="list device profiles and detect this machine")
    p.set_defaults(func=_devices)
    p = sub.add_parser("validate", help="validate results files against the schema")
    p.add_argument("files", nargs="+")
    p.set_defaults(func=_validate)
    p = sub.add_parser("show", help="print the summary table of a results file")
    p.add_argument("file")
    p.set_defaults(func=_show)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    code: int = args.func(args)
    return code


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

"""Import DICOM files, folders or zips from disk through the same ingest service as uploads."""
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from webapp.archive import services
from webapp.archive.models import UploadBatch


class Command(BaseCommand):
    help = "Import DICOM files, folders (recursively) or zip archives into the archive."

    def add_arguments(self, parser):
        parser.add_argument("paths", nargs="+", type=Path)
        parser.add_argument("--quiet-rejects", action="store_true", help="do not list rejected files")

    def handle(self, *paths, **options):
        missing = [str(p) for p in options["paths"] if not p.exists()]
        if missing:
            raise CommandError(f"no such file or folder: {', '.join(missing)}")
        batch = services.start_batch(None, UploadBatch.Source.COMMAND)
        for path in options["paths"]:
            for outcome in services.ingest_path(batch, path):
                if outcome.outcome == "rejected" and not options["quiet_rejects"]:
                    self.stderr.write(f"rejected {outcome.name}: {outcome.reason}")
        summary = services.finish_batch(batch)
        counts = summary["counts"]
        self.stdout.write(
            f"{counts['stored']} stored, {counts['duplicate']} duplicate, {counts['rejected']} rejected, "
            f"{counts['skipped']} skipped; {len(summary['studies'])} stud{'y' if len(summary['studies']) == 1 else 'ies'}"
        )

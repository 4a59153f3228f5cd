"""A few demo CT studies from the phantom generator, imported through the ingest service.

Idempotent: a demo patient already in the archive is not generated again.
"""
import tempfile
import time
from pathlib import Path

from django.core.management.base import BaseCommand

from ml.phantom import PhantomConfig, generate_phantom, write_dicom_series
from webapp.archive import services
from webapp.archive.models import Study, UploadBatch


class Command(BaseCommand):
    help = "Generate and import demo phantom CT studies (skips those already imported)."

    def add_arguments(self, parser):
        parser.add_argument("--count", type=int, default=3)
        parser.add_argument("--seed", type=int, default=2026)
        parser.add_argument("--preset", default="full", choices=["tiny", "small", "full"])

    def handle(self, *args, **options):
        batch = None
        for index in range(options["count"]):
            patient_id = f"DEMO-{index + 1:03d}"
            if Study.objects.filter(patient_id=patient_id).exists():
                self.stdout.write(f"  {patient_id}: already imported")
                continue
            batch = batch or services.start_batch(None, UploadBatch.Source.COMMAND)
            started = time.monotonic()
            phantom = generate_phantom(PhantomConfig.preset(options["preset"]), seed=options["seed"] * 1000 + index)
            with tempfile.TemporaryDirectory(prefix="radloop-demo-") as tmp:
                series_dir = Path(tmp) / "dicom"
                write_dicom_series(
                    phantom,
                    series_dir,
                    patient_id=patient_id,
                    patient_name=f"Demo^Phantom {index + 1}",
                    accession=f"DEMO{index + 1:04d}",
                    study_description="CT CHEST (synthetic phantom)",
                    series_description="Axial lung phantom",
                )
                outcomes = services.ingest_path(batch, series_dir)
            stored = sum(o.outcome == "stored" for o in outcomes)
            self.stdout.write(
                f"  {patient_id}: {stored} images, {len(phantom.lesions)} nodule(s), "
                f"{time.monotonic() - started:.1f} s"
            )
        if batch is not None:
            services.finish_batch(batch)

"""Findings workflows. AI findings of a (series, model version) are replaced as a whole; findings a
radiologist has touched (any status but proposed, or source radiologist) are never removed."""
from __future__ import annotations

import numpy as np
from django.db import transaction

from .models import Finding


@transaction.atomic
def replace_ai_findings(run, findings) -> int:
    """Store ``findings`` (ml.inference.Finding) for ``run``; returns how many were stored."""
    series = run.series
    Finding.objects.filter(
        series=series, source=Finding.Source.AI, model_version=run.model_version, status=Finding.Status.PROPOSED
    ).delete()
    decided = list(Finding.objects.filter(series=series).exclude(status=Finding.Status.PROPOSED))
    rows = []
    for f in findings:
        if any(_same_nodule(f, d) for d in decided):
            continue  # a radiologist already decided about this nodule
        row = Finding(
            study_id=series.study_id,
            series=series,
            source=Finding.Source.AI,
            inference_run=run,
            model_version=run.model_version,
            centre_x_mm=float(f.centre_xyz_mm[0]),
            centre_y_mm=float(f.centre_xyz_mm[1]),
            centre_z_mm=float(f.centre_xyz_mm[2]),
            bbox_min_xyz_mm=[float(v) for v in f.bbox_min_xyz_mm],
            bbox_max_xyz_mm=[float(v) for v in f.bbox_max_xyz_mm],
            diameter_mm=float(f.diameter_mm),
            long_axis_mm=float(f.long_axis_mm),
            short_axis_mm=float(f.short_axis_mm),
            volume_ml=float(f.volume_ml),
            mean_hu=float(f.mean_hu),
            score=float(f.score),
            uncertainty=None if f.uncertainty is None else float(f.uncertainty),
        )
        row.set_mask(f.mask, f.mask_origin_zyx)
        rows.append(row)
    Finding.objects.bulk_create(rows)
    return len(rows)


def _same_nodule(new, finding: Finding) -> bool:
    """Centres closer than the larger radius: the same lesion."""
    distance = np.linalg.norm(np.subtract(new.centre_xyz_mm, finding.centre_xyz_mm))
    return distance < max(new.diameter_mm, finding.diameter_mm) / 2

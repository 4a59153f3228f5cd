# Geometry flags: per-series warnings (replacing the free-text notes) and each image's own
# PixelSpacing and FrameOfReferenceUID, which the grid rule compares across a series.

import math

from django.db import migrations, models


def copy_series_geometry_to_images(apps, schema_editor):
    """Images stored before this migration take their series' values (the series had no other)."""
    Series = apps.get_model("archive", "Series")
    Instance = apps.get_model("archive", "Instance")
    for series in Series.objects.only("pk", "pixel_spacing_row_mm", "pixel_spacing_col_mm", "frame_of_reference_uid"):
        spacing = [series.pixel_spacing_row_mm, series.pixel_spacing_col_mm]
        finite = all(v is not None and math.isfinite(v) for v in spacing)
        Instance.objects.filter(series_id=series.pk).update(
            pixel_spacing_mm=spacing if finite else None, frame_of_reference_uid=series.frame_of_reference_uid)


class Migration(migrations.Migration):

    dependencies = [
        ("archive", "0002_samples_per_pixel"),
    ]

    operations = [
        migrations.RemoveField(model_name="series", name="geometry_notes"),
        migrations.AddField(
            model_name="series",
            name="geometry_warnings",
            field=models.JSONField(blank=True, default=list),
        ),
        migrations.AddField(
            model_name="instance",
            name="pixel_spacing_mm",
            field=models.JSONField(blank=True, null=True),
        ),
        migrations.AddField(
            model_name="instance",
            name="frame_of_reference_uid",
            field=models.CharField(blank=True, max_length=64),
        ),
        migrations.RunPython(copy_series_geometry_to_images, migrations.RunPython.noop),
    ]

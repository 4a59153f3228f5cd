# Geometry flags: per-series warnings (replacing the free-text notes) and each image's own
# PixelSpacing and FrameOfReferenceUID, which the grid rule compares across a series.

from django.db import migrations, models


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
    ]

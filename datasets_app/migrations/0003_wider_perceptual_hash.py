"""Widen DatasetImage.phash for the edge-map + colour-layout signature (datasets_app/near_duplicates.py),
recompute every stored value from the image's files, and then every near-duplicate flag with the new rule.

The old 64-bit dHash flagged most flat drawings as near-duplicates of each other, so its values and
flags are not kept. Each signature is made from the blob's 256 px thumbnail on disk (the original when
the thumbnail is missing or unreadable); an image with neither file gets a blank signature and takes no
part, as blank values always did. Going back blanks the signatures (a dHash cannot be recovered).
"""

import logging
from pathlib import Path

from django.conf import settings
from django.db import migrations, models
from PIL import Image

from datasets_app.imaging import make_thumbnail, open_image
from datasets_app.near_duplicates import Rule, is_near_duplicate, parse, signature

logger = logging.getLogger(__name__)
THUMBNAIL_SIZE = 256  # validation.THUMBNAIL_SIZE, which ingest hashes


def signature_from_files(blob) -> str:
    for name in (blob.thumbnail.name, blob.file.name):
        if not name:
            continue
        try:
            return signature(make_thumbnail(open_image(Path(settings.MEDIA_ROOT) / name), THUMBNAIL_SIZE))
        except (OSError, ValueError, SyntaxError, Image.DecompressionBombError):
            continue
    logger.warning("no readable file for blob %s; its images get no perceptual signature", blob.sha256[:12])
    return ""


def recompute(apps, schema_editor):
    DatasetImage = apps.get_model("datasets", "DatasetImage")
    rule = Rule(edge_percent=getattr(settings, "DATASET_NEAR_DUPLICATE_EDGE_PERCENT", Rule.edge_percent),
                colour_percent=getattr(settings, "DATASET_NEAR_DUPLICATE_COLOUR_PERCENT", Rule.colour_percent))
    by_blob: dict[int, str] = {}
    dataset_ids = DatasetImage.objects.order_by("dataset_id").values_list("dataset_id", flat=True).distinct()
    for dataset_id in list(dataset_ids):
        images = list(DatasetImage.objects.filter(dataset_id=dataset_id).select_related("blob").order_by("id"))
        earlier = []
        for image in images:
            if image.blob_id not in by_blob:
                by_blob[image.blob_id] = signature_from_files(image.blob)
            image.phash = by_blob[image.blob_id]
            mine = parse(image.phash)
            # As ingest does: flagged as a near-duplicate of the first earlier image that matches.
            image.near_duplicate_of_id = None if mine is None else next(
                (pk for pk, other in earlier if is_near_duplicate(mine, other, rule)), None)
            if mine is not None:
                earlier.append((image.pk, mine))
        DatasetImage.objects.bulk_update(images, ["phash", "near_duplicate_of"], batch_size=500)


def blank(apps, schema_editor):
    apps.get_model("datasets", "DatasetImage").objects.update(phash="")


class Migration(migrations.Migration):

    dependencies = [
        ('datasets', '0002_blobhold'),
    ]

    operations = [
        migrations.AlterField(
            model_name='datasetimage',
            name='phash',
            field=models.CharField(blank=True, default='', help_text='Perceptual signature (near_duplicates.signature: edge map and colour layout of the thumbnail); blank or an older format takes no part.', max_length=1024),
        ),
        migrations.RunPython(recompute, blank),
    ]

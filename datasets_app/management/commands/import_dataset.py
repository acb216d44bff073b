"""Import a folder as a dataset: `image + image.txt` pairs, kohya `10_trigger class/` folders, or an
exported `lorasite` folder with manifest.json; recursively, with a progress bar."""

from __future__ import annotations

import json
import zipfile
from contextlib import ExitStack
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError
from tqdm import tqdm

from datasets_app.ingest import (
    KOHYA_FOLDER,
    folder_entries,
    ingest_entries,
    limits_from_settings,
    upload_entries,
)
from datasets_app.manifest import MANIFEST_NAME, import_manifest, parse_manifest
from datasets_app.models import Dataset
from datasets_app.services import create_dataset
from lorasite.accounts.models import Team
from lorasite.errors import DomainError


class Command(BaseCommand):
    help = "Import images (and their .txt captions) from a folder or zip into a new or existing dataset."

    def add_arguments(self, parser):
        parser.add_argument("path", help="a folder, or a zip exported by lorasite or laid out for kohya")
        parser.add_argument("--team", required=True, help="team slug")
        parser.add_argument("--name", required=True, help="dataset name; images are added if it exists")
        parser.add_argument("--trigger-word", default=None,
                            help="defaults to the first word after the repeats in a kohya folder name")
        parser.add_argument("--user", default=None, help="username recorded as creator")

    def handle(self, *args, path, team, name, trigger_word, user, **options):
        root = Path(path)
        if not root.exists():
            raise CommandError(f"{path} does not exist")
        team_obj = Team.objects.filter(slug=team).first()
        if team_obj is None:
            raise CommandError(f"no team {team!r}")
        user_obj = None
        if user:
            from django.contrib.auth import get_user_model

            user_obj = get_user_model().objects.filter(username=user).first()
            if user_obj is None:
                raise CommandError(f"no user {user!r}")
        with ExitStack() as stack:
            entries = self._entries(root, stack)
            progress = stack.enter_context(tqdm(total=len(entries), unit="file", desc="importing",
                                                file=self.stderr._out, disable=None))

            def tick(done: int, total: int) -> None:
                progress.total = total
                progress.update(done - progress.n)

            try:
                manifest = next((e for e in entries if e.path == MANIFEST_NAME and not e.error), None)
                if manifest is not None:
                    dataset, report = import_manifest(team_obj, user_obj, parse_manifest(manifest.read()), entries,
                                                      name=name, progress=tick)
                else:
                    dataset = self._dataset(team_obj, user_obj, name, trigger_word, entries)
                    report = ingest_entries(dataset, entries, user=user_obj, progress=tick)
            except DomainError as exc:
                raise CommandError(exc.message) from None
        for item in report.rejected:
            self.stderr.write(f"rejected {item['name']}: {item['reason']}")
        summary = {"dataset": str(dataset.uuid), "added": len(report.added),
                   "duplicates": len(report.duplicates), "rejected": len(report.rejected)}
        self.stdout.write(json.dumps(summary))

    def _entries(self, root: Path, stack: ExitStack):
        if root.is_dir():
            return folder_entries(root)
        if not zipfile.is_zipfile(root):
            raise CommandError(f"{root.name} is neither a folder nor a zip archive")
        handle = stack.enter_context(open(root, "rb"))  # closed by the ExitStack
        entries = upload_entries(root.name, handle, root.stat().st_size, limits_from_settings(), stack)
        return entries

    def _dataset(self, team, user, name, trigger_word, entries) -> Dataset:
        existing = Dataset.objects.filter(team=team, name=name).first()
        if existing is not None:
            return existing
        if trigger_word is None:
            trigger_word = next((KOHYA_FOLDER.match(part).group(2).split()[0]
                                 for e in entries for part in e.path.split("/")[:-1]
                                 if KOHYA_FOLDER.match(part)), "")
        return create_dataset(team, user, name, trigger_word=trigger_word)

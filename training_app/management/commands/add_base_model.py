"""`manage.py add_base_model NAME LOCATION --family sd15|sdxl`: offer a base model to train on."""

from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError

from lorasite.accounts.models import Team
from training_app.backends.local import resolve_model_location, single_file_config_dir
from training_app.models import BaseModel, Family


class Command(BaseCommand):
    help = ("Register a base model: a diffusers folder or a single .safetensors/.ckpt checkpoint, absolute "
            "or relative to LORASITE_MODELS_DIR (it must be readable at that path on every GPU node).")

    def add_arguments(self, parser):
        parser.add_argument("name", help="what jobs name it by (letters, digits, - and _), e.g. sd15-base")
        parser.add_argument("location")
        parser.add_argument("--family", required=True, choices=[Family.SD15, Family.SDXL])
        parser.add_argument("--team", help="team slug; without it every team may use the model")
        parser.add_argument("--description", default="")

    def handle(self, *args, name, location, family, team, description, **options):
        from django.core.exceptions import ValidationError
        from django.core.validators import validate_slug

        try:
            validate_slug(name)
        except ValidationError:
            raise CommandError(f"{name!r}: a name is letters, digits, - and _ only") from None
        path = resolve_model_location(location)
        self._check(path, family)
        owner = None
        if team:
            owner = Team.objects.filter(slug=team).first()
            if owner is None:
                raise CommandError(f"no team {team!r}")
        model, _ = BaseModel.objects.update_or_create(name=name, defaults={
            "family": family, "location": location, "team": owner, "description": description, "enabled": True,
            "weights_sha256": ""})
        self.stdout.write(f"{name}: {family} at {path}")
        self._hash(model, path)

    def _hash(self, model: BaseModel, path) -> None:
        from training_app.trainer.model_hash import ModelHashError

        try:
            digest = model.store_weights_sha256(path)
        except ModelHashError as exc:
            # Still usable: the trainer hashes what it loads, and the LoRA header just lacks the hash.
            self.stderr.write(f"not hashed: {exc}")
            return
        self.stdout.write(f"sha256 {digest}")

    def _check(self, path, family: str) -> None:
        try:
            from training_app.trainer.models import ModelLoadError, detect_family
        except ImportError:
            # A web node without the training extra: the GPU nodes check the model when a job loads it.
            if not path.exists():
                raise CommandError(f"{path} does not exist") from None
            return
        try:
            found = detect_family(path)
        except ModelLoadError as exc:
            raise CommandError(str(exc)) from None
        if found is not None and found != family:
            raise CommandError(f"{path.name} holds an {found} model, not {family}")
        if path.is_file():
            configs = single_file_config_dir(family)
            if not (configs / "model_index.json").is_file():
                raise CommandError(
                    f"{path.name} is a single-file checkpoint: loading it offline needs the configs and tokenizers "
                    f"of a diffusers {family} folder at {configs} (any {family} model in diffusers layout; its "
                    "weights are not used)")
